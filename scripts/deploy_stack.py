"""Deploys infra/filesync.yaml with CloudFormation and prints the server configuration
for the stack's resources, as environment variables (`--format env`, the default) or JSON.

Against the local emulator: `scripts/aws-emulator deploy [prefix]`. Against AWS: run it
with your usual AWS_* variables (the template then also creates the IAM policy to attach
to the servers' role).
"""

import argparse
import json
import os
import pathlib
import sys

import boto3

TEMPLATE = pathlib.Path(__file__).resolve().parent.parent / "infra" / "filesync.yaml"


def fill_emulator_gaps(outputs):
    """Applies what an emulator's CloudFormation ignores (moto: the table's TTL and the
    bucket's notification); a no-op where CloudFormation applied the template fully."""
    dynamodb = boto3.client("dynamodb")
    table = outputs["TableName"]
    ttl = dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    if ttl["TimeToLiveStatus"] in ("DISABLED", "DISABLING"):
        dynamodb.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"AttributeName": "ttl", "Enabled": True},
        )
        print("# filled in: the table's TTL on `ttl`", file=sys.stderr)
    s3 = boto3.client("s3")
    bucket = outputs["BucketName"]
    if not s3.get_bucket_notification_configuration(Bucket=bucket).get("QueueConfigurations"):
        sqs = boto3.client("sqs")
        queue_arn = sqs.get_queue_attributes(
            QueueUrl=outputs["EventsQueueUrl"], AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}
                ]
            },
        )
        print("# filled in: the bucket's ObjectCreated notification", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prefix", default="filesync")
    parser.add_argument("--format", choices=["env", "json"], default="env")
    args = parser.parse_args()

    cfn = boto3.client("cloudformation")
    stack = f"{args.prefix}-stack"
    cfn.create_stack(
        StackName=stack,
        TemplateBody=TEMPLATE.read_text(),
        Parameters=[{"ParameterKey": "Prefix", "ParameterValue": args.prefix}],
        Capabilities=["CAPABILITY_IAM"],
    )
    cfn.get_waiter("stack_create_complete").wait(
        StackName=stack, WaiterConfig={"Delay": 1, "MaxAttempts": 600}
    )
    outputs = {
        o["OutputKey"]: o["OutputValue"]
        for o in cfn.describe_stacks(StackName=stack)["Stacks"][0]["Outputs"]
    }
    fill_emulator_gaps(outputs)
    config = {
        "FILESYNC_STORAGE__BACKEND": "aws",
        "FILESYNC_STORAGE__TABLE": outputs["TableName"],
        "FILESYNC_STORAGE__BUCKET": outputs["BucketName"],
        "FILESYNC_STORAGE__EVENTS_QUEUE_URL": outputs["EventsQueueUrl"],
        "FILESYNC_STORAGE__NOTICES_TOPIC_ARN": outputs["NoticesTopicArn"],
        "FILESYNC_STORAGE__REPLICA_QUEUE_PREFIX": outputs["ReplicaQueuePrefix"],
    }
    if os.environ.get("AWS_ENDPOINT_URL"):
        # Emulators serve buckets by path, not by host name.
        config["FILESYNC_STORAGE__S3_PATH_STYLE"] = "true"
    if args.format == "json":
        json.dump({**config, "DeadLetterQueueUrl": outputs["DeadLetterQueueUrl"]}, sys.stdout)
        print()
    else:
        for key, value in config.items():
            print(f"export {key}={value}")
        print(f"# dead-letter queue: {outputs['DeadLetterQueueUrl']}")
        print(f"# attach to the servers' role: {outputs['ServerPolicyArn']}")


if __name__ == "__main__":
    main()
