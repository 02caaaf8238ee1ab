/**
 * @module source/manifests
 * Reads Kubernetes objects from a directory of manifest files (the offline / test source). Only
 * parsing happens here: every object comes out as untrusted `unknown` and is validated by
 * `source/normalize.ts`. A file that cannot be read or parsed is reported and skipped as a whole
 * (never half-applied); the other files still load.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { Problem } from '../util/problems.ts';
import { appendAll } from '../util/arrays.ts';

export interface ManifestObjects {
  readonly objects: unknown[];
  readonly problems: Problem[];
}

const MANIFEST_EXTENSIONS = ['.yaml', '.yml', '.json'];
/** Nesting deeper than this is not a Kubernetes object; it also bounds the cycle check below. */
const MAX_DEPTH = 64;

/**
 * Every object in the `*.yaml`, `*.yml` and `*.json` files directly in `dir`, files in name order
 * (UTF-16 code unit order, not locale order), documents in file order, `*List` items flattened.
 * Hidden files (`.name.yaml`, editor swap and lock files) and anything that is not a regular file
 * (directories, FIFOs, sockets) are skipped. Symbolic links are followed, as ConfigMap volumes
 * use them. Throws when `dir` itself cannot be listed.
 */
export async function readManifestDir(dir: string): Promise<ManifestObjects> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new Error(`manifest directory ${dir} does not exist`);
    if (code === 'ENOTDIR') throw new Error(`manifest directory ${dir} is not a directory`);
    throw new Error(`cannot list manifest directory ${dir}: ${errorText(err)}`);
  }
  const candidates = names
    .filter((n) => !n.startsWith('.') && MANIFEST_EXTENSIONS.some((ext) => n.toLowerCase().endsWith(ext)))
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

  const objects: unknown[] = [];
  const problems: Problem[] = [];
  for (const name of candidates) {
    const path = join(dir, name);
    let text: string;
    try {
      const info = await stat(path);
      if (!info.isFile()) continue;
      text = await readFile(path, 'utf8');
    } catch (err) {
      problems.push(fileProblem(path, `cannot read file: ${errorText(err)}`));
      continue;
    }
    const parsed = parseManifestText(text, path);
    appendAll(objects, parsed.objects);
    appendAll(problems, parsed.problems);
  }
  return { objects, problems };
}

/**
 * Parse one manifest file's text (YAML 1.2, multi-document, or JSON for a `.json` file; `*List`
 * items flattened one level). Pure. `sourceName` only labels problems. Any syntax error, duplicate key,
 * alias bomb or cyclic alias rejects the whole text with one problem and no objects.
 */
export function parseManifestText(text: string, sourceName: string): ManifestObjects {
  const values: unknown[] = [];
  try {
    if (sourceName.toLowerCase().endsWith('.json')) {
      // JSON.parse is ~200x faster than the YAML parser on large files (a 10,000-Service List: 25 MB).
      // A duplicate key keeps its last value, as Go's encoding/json (the API server's decoder) does.
      const value: unknown = JSON.parse(text);
      if (!withinDepth(value, 0)) {
        return fail(sourceName, `cannot parse: the document is nested deeper than ${MAX_DEPTH}`);
      }
      if (value !== null) values.push(value);
      return flattenLists(values, sourceName);
    }
    // Keys must be unique (the default): two parsers must never disagree on which value counts.
    for (const doc of parseAllDocuments(text, { uniqueKeys: true })) {
      const firstError = doc.errors[0];
      if (firstError) {
        // The first line of the message carries the position; the rest quotes the source.
        return fail(sourceName, `cannot parse: ${firstLine(firstError.message)}`);
      }
      const value: unknown = doc.toJS({ maxAliasCount: 100 });
      if (value === null || value === undefined) continue;
      if (!isTree(value, 0, new Set())) {
        return fail(
          sourceName,
          `cannot parse: document ${values.length + 1} is cyclic or nested deeper than ${MAX_DEPTH}`,
        );
      }
      values.push(value);
    }
  } catch (err) {
    return fail(sourceName, `cannot parse: ${errorText(err)}`);
  }
  return flattenLists(values, sourceName);
}

/** Every document's objects, `*List` items flattened one level. */
function flattenLists(values: readonly unknown[], sourceName: string): ManifestObjects {
  const objects: unknown[] = [];
  const problems: Problem[] = [];
  values.forEach((value, i) => {
    if (!isListObject(value)) {
      objects.push(value);
      return;
    }
    const items = Object.hasOwn(value, 'items') ? value['items'] : undefined;
    if (items === undefined || items === null) return;
    if (!Array.isArray(items)) {
      problems.push({
        kind: 'File',
        object: sourceName,
        path: `documents[${i}].items`,
        message: "a List's items must be an array",
      });
      return;
    }
    for (const item of items) if (item !== null && item !== undefined) objects.push(item);
  });
  return { objects, problems };
}

function isListObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const kind = Object.hasOwn(value, 'kind') ? (value as Record<string, unknown>)['kind'] : undefined;
  return typeof kind === 'string' && kind.endsWith('List');
}

/** True when `value` is at most MAX_DEPTH deep; for JSON.parse's output, which cannot have cycles or aliases. */
function withinDepth(value: unknown, depth: number): boolean {
  if (typeof value !== 'object' || value === null) return true;
  if (depth > MAX_DEPTH) return false;
  if (Array.isArray(value)) {
    for (const child of value) if (!withinDepth(child, depth + 1)) return false;
    return true;
  }
  for (const key in value) if (!withinDepth((value as Record<string, unknown>)[key], depth + 1)) return false;
  return true;
}

/** True when `value` has no cycles and is at most MAX_DEPTH deep (shared, acyclic aliases are fine). */
function isTree(value: unknown, depth: number, ancestors: Set<object>): boolean {
  if (typeof value !== 'object' || value === null) return true;
  if (depth > MAX_DEPTH || ancestors.has(value)) return false;
  ancestors.add(value);
  const children = Array.isArray(value) ? value : Object.values(value);
  const ok = children.every((child) => isTree(child, depth + 1, ancestors));
  ancestors.delete(value);
  return ok;
}

function fail(sourceName: string, message: string): ManifestObjects {
  return { objects: [], problems: [fileProblem(sourceName, message)] };
}

function fileProblem(path: string, message: string): Problem {
  return { kind: 'File', object: path, path: '', message };
}

function firstLine(message: string): string {
  return safeText((message.split('\n')[0] ?? '').replace(/:\s*$/, ''));
}

function errorText(err: unknown): string {
  return safeText(err instanceof Error ? err.message : String(err));
}

/** One line of printable ASCII, at most 200 characters: parser messages may quote file content. */
function safeText(s: string): string {
  const clean = s.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return clean.length > 200 ? `${clean.slice(0, 200)}...` : clean;
}
