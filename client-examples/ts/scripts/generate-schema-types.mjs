// Generates src/schema.ts, the TypeScript types of every type in the server's
// schema.graphql (itself generated from the server's code): enums as string unions, objects
// and inputs as interfaces. The documents in src/documents.ts pick their result types from
// these, and a test validates each document against the same schema, so a change in the
// server's API breaks the type check or the tests rather than an app at run time.
// `--check` fails when src/schema.ts is out of date.
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  buildSchema,
  isEnumType,
  isInputObjectType,
  isListType,
  isNonNullType,
  isObjectType,
  isScalarType,
} from 'graphql';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const sdl = readFileSync(here('../../../schema.graphql'), 'utf8');
const schema = buildSchema(sdl);

// How each scalar travels in JSON.
const SCALARS = {
  ID: 'string',
  String: 'string',
  Boolean: 'boolean',
  Int: 'number',
  Float: 'number',
  Size: 'number',
  Cursor: 'string',
  DateTime: 'string',
  Upload: 'Blob',
};

function ts(type) {
  if (isNonNullType(type)) return bare(type.ofType);
  return `${bare(type)} | null`;
}
function bare(type) {
  if (isListType(type)) {
    const inner = ts(type.ofType);
    return inner.includes('|') ? `Array<${inner}>` : `${inner}[]`;
  }
  if (isScalarType(type)) {
    const mapped = SCALARS[type.name];
    if (!mapped) throw new Error(`no TypeScript type for scalar ${type.name}`);
    return `Scalars['${type.name}']`;
  }
  return type.name;
}
function doc(description, indent = '') {
  if (!description) return '';
  const lines = description.split('\n');
  return `${indent}/**\n${lines.map((l) => `${indent} *${l ? ' ' + l : ''}`).join('\n')}\n${indent} */\n`;
}

const out = [
  '// Generated from schema.graphql by scripts/generate-schema-types.mjs: do not edit.',
  '// Run `npm run generate` after the server schema changes.',
  '',
  'export interface Scalars {',
  ...Object.entries(SCALARS).map(([k, v]) => `  ${k}: ${v};`),
  '}',
  '',
];
const types = Object.values(schema.getTypeMap())
  .filter((t) => !t.name.startsWith('__'))
  .sort((a, b) => a.name.localeCompare(b.name));
for (const type of types) {
  if (isEnumType(type)) {
    out.push(doc(type.description) + `export type ${type.name} =`);
    out.push(
      type
        .getValues()
        .map((v) => `  | '${v.name}'`)
        .join('\n') + ';',
    );
    out.push(
      `export const ${type.name}Values: readonly ${type.name}[] = [${type
        .getValues()
        .map((v) => `'${v.name}'`)
        .join(', ')}];`,
      '',
    );
  } else if (isObjectType(type) || isInputObjectType(type)) {
    out.push(doc(type.description) + `export interface ${type.name} {`);
    for (const field of Object.values(type.getFields())) {
      const optional = isInputObjectType(type) && !isNonNullType(field.type) ? '?' : '';
      out.push(doc(field.description, '  ') + `  ${field.name}${optional}: ${ts(field.type)};`);
    }
    out.push('}', '');
  }
}
const text = out.join('\n').replace(/\n{3,}/g, '\n\n');
const target = here('../src/schema.ts');
if (process.argv.includes('--check')) {
  let current = '';
  try {
    current = readFileSync(target, 'utf8');
  } catch {}
  if (current !== text) {
    console.error('src/schema.ts is out of date with schema.graphql: run `npm run generate`');
    process.exit(1);
  }
} else {
  writeFileSync(target, text);
}
