import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseManifestText, readManifestDir } from '../../src/source/manifests.ts';

describe('parseManifestText', () => {
  it('reads multi-document YAML, skipping empty documents', () => {
    const text = [
      '---',
      'apiVersion: v1',
      'kind: Service',
      'metadata: {name: a}',
      '---',
      '# only a comment',
      '---',
      '---',
      'apiVersion: v1',
      'kind: Service',
      'metadata: {name: b}',
      '...',
    ].join('\n');
    const { objects, problems } = parseManifestText(text, 'x.yaml');
    expect(problems).toEqual([]);
    expect(objects).toEqual([
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'a' } },
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'b' } },
    ]);
  });

  it('reads JSON', () => {
    const { objects, problems } = parseManifestText(
      '{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n\\u00e9"}}',
      'x.json',
    );
    expect(problems).toEqual([]);
    expect(objects).toEqual([{ apiVersion: 'v1', kind: 'Node', metadata: { name: 'né' } }]);
  });

  it('a .json file is read with the JSON parser: a List flattened, a duplicate key keeps its last value, errors named', () => {
    const list = '{"kind": "List", "items": [{"kind": "Node", "metadata": {"name": "a", "name": "b"}}]}';
    expect(parseManifestText(list, 'c.json')).toEqual({
      objects: [{ kind: 'Node', metadata: { name: 'b' } }],
      problems: [],
    });
    const bad = parseManifestText('{"kind": "List", "items": [}', 'bad.json');
    expect(bad.objects).toEqual([]);
    expect(bad.problems[0]?.message).toMatch(/^cannot parse: .*JSON/);
    const deep = parseManifestText(`${'['.repeat(200)}${']'.repeat(200)}`, 'deep.json');
    expect(deep.problems[0]?.message).toMatch(/nested deeper than/);
  });

  it('flattens List and *List items', () => {
    const text = [
      'apiVersion: v1',
      'kind: List',
      'items:',
      '- {kind: Service, metadata: {name: a}}',
      '- {kind: Service, metadata: {name: b}}',
      '---',
      'apiVersion: v1',
      'kind: ServiceList',
      'items: [{kind: Service, metadata: {name: c}}]',
      '---',
      'kind: EndpointSliceList',
      'items: null',
      '---',
      'kind: List',
      'items: []',
    ].join('\n');
    const { objects, problems } = parseManifestText(text, 'x.yaml');
    expect(problems).toEqual([]);
    expect(objects.map((o) => (o as { metadata: { name: string } }).metadata.name)).toEqual(['a', 'b', 'c']);
  });

  it('reports a List whose items are not a list and keeps the other documents', () => {
    const { objects, problems } = parseManifestText('kind: List\nitems: {a: 1}\n---\nkind: Service\n', 'x.yaml');
    expect(objects).toEqual([{ kind: 'Service' }]);
    expect(problems).toEqual([
      { kind: 'File', object: 'x.yaml', path: 'documents[0].items', message: "a List's items must be an array" },
    ]);
  });

  it('keeps YAML 1.2 scalars as Kubernetes expects', () => {
    const { objects } = parseManifestText('a: yes\nb: "80"\nc: 80\nd: 0x1F\n', 'x.yaml');
    expect(objects).toEqual([{ a: 'yes', b: '80', c: 80, d: 31 }]);
  });

  const rejected: Array<[string, string]> = [
    ['a syntax error', 'kind: Service\nmetadata: {name: [a\n'],
    ['a duplicate key', 'kind: Service\nkind: Node\n'],
    ['bad JSON', '{"kind": "Service",,}'],
    [
      'an alias bomb',
      [
        'a: &a [x,x,x,x,x,x,x,x,x]',
        'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]',
        'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]',
        'd: [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]',
      ].join('\n'),
    ],
    ['a cyclic alias', 'a: &x {b: *x}\n'],
    ['excessive nesting', `${'['.repeat(100)}${']'.repeat(100)}`],
    ['a bad second document', 'kind: Service\n---\nkind: [\n'],
  ];
  for (const [what, text] of rejected) {
    it(`rejects the whole text on ${what}`, () => {
      const { objects, problems } = parseManifestText(text, 'bad.yaml');
      expect(objects).toEqual([]);
      expect(problems).toHaveLength(1);
      expect(problems[0]).toMatchObject({ kind: 'File', object: 'bad.yaml', path: '' });
      expect(problems[0]?.message).toMatch(/^cannot parse: [\x20-\x7e]+$/);
    });
  }

  it('keeps parser messages to one safe line', () => {
    const { problems } = parseManifestText('kind: "é\u2028\n  x: [\n', 'bad.yaml');
    expect(problems[0]?.message).toMatch(/^[\x20-\x7e]{1,220}$/);
  });

  it('returns nothing for empty text', () => {
    expect(parseManifestText('', 'e.yaml')).toEqual({ objects: [], problems: [] });
    expect(parseManifestText('# nothing\n---\n', 'e.yaml')).toEqual({ objects: [], problems: [] });
  });
});

describe('readManifestDir', () => {
  let dir = '';
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kproxy-manifests-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const svc = (name: string) => `apiVersion: v1\nkind: Service\nmetadata: {name: ${name}}\n`;
  const names = (objects: unknown[]) => objects.map((o) => (o as { metadata: { name: string } }).metadata.name);

  it('reads .yaml, .yml and .json files directly in the directory, in name order', async () => {
    await writeFile(join(dir, 'b.yaml'), `${svc('b1')}---\n${svc('b2')}`);
    await writeFile(join(dir, 'a.yml'), svc('a'));
    await writeFile(
      join(dir, 'c.json'),
      JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'c' } }),
    );
    await writeFile(join(dir, 'B.YAML'), svc('upper'));
    await writeFile(join(dir, 'notes.txt'), svc('txt'));
    await writeFile(join(dir, '.hidden.yaml'), svc('hidden'));
    await mkdir(join(dir, 'sub.yaml'));
    await mkdir(join(dir, 'nested'));
    await writeFile(join(dir, 'nested', 'd.yaml'), svc('nested'));
    const { objects, problems } = await readManifestDir(dir);
    expect(problems).toEqual([]);
    expect(names(objects)).toEqual(['upper', 'a', 'b1', 'b2', 'c']);
  });

  it('follows symbolic links to files (ConfigMap volumes)', async () => {
    await mkdir(join(dir, '..data'));
    await writeFile(join(dir, '..data', 'svc.yaml'), svc('linked'));
    await symlink(join('..data', 'svc.yaml'), join(dir, 'svc.yaml'));
    await symlink(join(dir, 'missing.yaml'), join(dir, 'dangling.yaml'));
    const { objects, problems } = await readManifestDir(dir);
    expect(names(objects)).toEqual(['linked']);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({ kind: 'File', object: join(dir, 'dangling.yaml'), path: '' });
    expect(problems[0]?.message).toMatch(/^cannot read file: /);
  });

  it('skips a bad file with a problem and still loads the others', async () => {
    await writeFile(join(dir, '1-good.yaml'), svc('one'));
    await writeFile(join(dir, '2-bad.yaml'), `${svc('lost')}---\nkind: [oops\n`);
    await writeFile(join(dir, '3-bad.json'), '{"kind": ');
    await writeFile(
      join(dir, '4-good.json'),
      JSON.stringify({ kind: 'List', items: [{ kind: 'Service', metadata: { name: 'four' } }] }),
    );
    const { objects, problems } = await readManifestDir(dir);
    expect(names(objects)).toEqual(['one', 'four']);
    expect(problems.map((p) => [p.kind, p.object])).toEqual([
      ['File', join(dir, '2-bad.yaml')],
      ['File', join(dir, '3-bad.json')],
    ]);
  });

  it('returns nothing for an empty directory', async () => {
    expect(await readManifestDir(dir)).toEqual({ objects: [], problems: [] });
  });

  it('throws a clear error for a missing directory or a file', async () => {
    const missing = join(dir, 'nope');
    await expect(readManifestDir(missing)).rejects.toThrow(`manifest directory ${missing} does not exist`);
    const file = join(dir, 'f.yaml');
    await writeFile(file, svc('x'));
    await expect(readManifestDir(file)).rejects.toThrow(`manifest directory ${file} is not a directory`);
  });
});
