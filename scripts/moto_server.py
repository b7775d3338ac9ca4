"""Starts the moto server with DynamoDB requests serialised.

moto's server handles requests on threads, but its DynamoDB backend is not thread-safe:
`TransactWriteItems` snapshots the whole table before it starts and, when a condition
fails, puts the snapshot back, which erases any write another thread made meanwhile, and a
reader can see a transaction half applied. Real DynamoDB isolates transactions, so the
tests need the emulator to as well: every DynamoDB and DynamoDB Streams backend call here
takes one lock. Everything else (S3, SQS long polls, CloudFormation) stays concurrent,
except that SQS queues are created, deleted and listed one at a time: creating a queue
with a redrive policy walks the dict of all queues, which a concurrent creation (two
stacks deployed at once) changes under it.

Also, moto keeps every shard iterator ever handed out, and each holds the table it was made
for; a cancelled transaction replaces the table with its snapshot, so every iterator made
before then pins a whole copy of the table. Here an iterator is forgotten once `GetRecords` has used it (the
consumer never reuses one; `GetRecords` hands out the next), and it reads the table's
current shard. With the lock, a reader never sees a cancelled transaction's records.

And S3's DeleteObjectTagging of a key that does not exist answers 404 NoSuchKey, as S3
does (moto fails with a 500, which the SDK retries for seconds). And ListParts answers with
the root element S3 uses, `ListPartsResult` (moto 5.2.5 writes `ListPartsResponse`, which
the AWS SDK for Rust refuses to parse).
"""

import copy
import functools
import threading
from collections import defaultdict

from moto.core.common_models import BaseModel
import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import StreamShard, Table
from moto.dynamodbstreams.models import DynamoDBStreamsBackend, ShardIterator
from moto.s3.exceptions import MissingKey
from moto.s3.models import S3Backend
from moto.s3.responses import S3Response
from moto.server import main
from moto.sqs.models import SQSBackend

LOCK = threading.RLock()

# moto keeps every model object it ever made (for its dashboard), and a DynamoDB
# transaction deep-copies its table (every item) to be able to roll back: a few thousand
# writes retain gigabytes. Nothing here needs the dashboard.
BaseModel.__new__ = lambda cls, *args, **kwargs: object.__new__(cls)


def serialised(method):
    @functools.wraps(method)
    def locked(*args, **kwargs):
        with LOCK:
            return method(*args, **kwargs)

    return locked


QUEUES_LOCK = threading.Lock()
for name in ("create_queue", "delete_queue", "list_queues"):
    original = getattr(SQSBackend, name)

    def queues_locked(*args, _original=original, **kwargs):
        with QUEUES_LOCK:
            return _original(*args, **kwargs)

    setattr(SQSBackend, name, functools.wraps(original)(queues_locked))

for backend in (DynamoDBBackend, DynamoDBStreamsBackend):
    for name, member in list(vars(backend).items()):
        if callable(member) and not name.startswith("_"):
            setattr(backend, name, serialised(member))



def detached_init(self, streams_backend, stream_shard, *args, **kwargs):
    """An iterator names its table instead of holding (and pinning) its shard."""
    original_init(self, streams_backend, stream_shard, *args, **kwargs)
    self.table_name = stream_shard.table.name
    self.fixed_arn = original_arn.fget(self)
    self.stream_shard = None


def get_records_once(self, iterator_arn, limit):
    shard_iterator = self.shard_iterators.pop(iterator_arn)
    # Read the table's shard as it is now, not the copy a rolled-back transaction replaced
    # (that copy holds the cancelled writes' records: phantoms, and never any new ones).
    shard_iterator.stream_shard = self.dynamodb.get_table(shard_iterator.table_name).stream_shard
    try:
        return shard_iterator.get(limit)
    finally:
        shard_iterator.stream_shard = None


original_init = ShardIterator.__init__
original_arn = ShardIterator.arn
ShardIterator.__init__ = detached_init
ShardIterator.arn = property(lambda self: self.fixed_arn)
DynamoDBStreamsBackend.get_records = serialised(get_records_once)

# A transaction snapshots its whole table (a deep copy of every item and stream record)
# so as to roll back, which costs time in proportion to the table. Here the snapshot
# copies only the items the transaction names (nothing else can change: the lock is
# held), and a cancelled transaction takes back only the stream records it added.
class ItemSnapshots:
    """Stands in for the `copy` module inside moto's DynamoDB backend."""

    touched = threading.local()

    @staticmethod
    def deepcopy(obj, memo=None):
        if not isinstance(obj, Table):
            return copy.deepcopy(obj, memo)
        snapshot = copy.copy(obj)
        snapshot.items = defaultdict(dict)
        for hash_key, value in obj.items.items():
            snapshot.items[hash_key] = dict(value) if isinstance(value, dict) else value
        for table_name, key in ItemSnapshots.touched.keys:
            if table_name != obj.name:
                continue
            hash_key = DynamoType(key[obj.hash_key_attr])
            if obj.range_key_attr is None:
                if hash_key in obj.items:
                    snapshot.items[hash_key] = copy.deepcopy(obj.items[hash_key])
            else:
                range_key = DynamoType(key[obj.range_key_attr])
                if range_key in obj.items.get(hash_key, {}):
                    item = copy.deepcopy(obj.items[hash_key][range_key])
                    snapshot.items[hash_key][range_key] = item
        return snapshot


def transact_write_items(self, transact_items):
    keys = []
    for entry in transact_items:
        _, op = next(iter(entry.items()))
        table = self.tables.get(op.get("TableName"))
        if table is None:
            continue
        key = op.get("Key") or {
            name: op["Item"][name]
            for name in (table.hash_key_attr, table.range_key_attr)
            if name is not None and name in op.get("Item", {})
        }
        keys.append((table.name, key))
    ItemSnapshots.touched.keys = keys
    shards = [t.stream_shard for t in self.tables.values() if t.stream_shard is not None]
    lengths = [len(shard.items) for shard in shards]
    try:
        return original_transact(self, transact_items)
    except Exception:
        for shard, length in zip(shards, lengths):
            del shard.items[length:]
        raise


StreamShard.__deepcopy__ = lambda self, memo: self
original_transact = DynamoDBBackend.transact_write_items
DynamoDBBackend.transact_write_items = serialised(transact_write_items)
dynamodb_models.copy = ItemSnapshots

original_delete_tagging = S3Backend.delete_object_tagging


def delete_object_tagging(self, bucket_name, key_name, version_id=None):
    if self.get_object(bucket_name, key_name, version_id=version_id) is None:
        raise MissingKey(key=key_name)
    return original_delete_tagging(self, bucket_name, key_name, version_id=version_id)


S3Backend.delete_object_tagging = delete_object_tagging

original_list_parts = S3Response.list_parts


def list_parts(self):
    status, headers, body = original_list_parts(self)
    if isinstance(body, str):
        body = body.encode()
    body = body.replace(b"<ListPartsResponse", b"<ListPartsResult")
    body = body.replace(b"</ListPartsResponse>", b"</ListPartsResult>")
    for name in list(headers):
        if name.lower() == "content-length":
            headers[name] = str(len(body))
    return status, headers, body


S3Response.list_parts = list_parts

if __name__ == "__main__":
    main()
