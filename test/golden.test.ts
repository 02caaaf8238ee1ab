/**
 * Golden files: the whole pure pipeline, Kubernetes YAML + flags → the nftables text `kproxy dump`
 * prints, compared with reviewed files under golden/<case>/ (see golden/README.md).
 *
 *   input.yaml              ordinary Kubernetes YAML, multi-document
 *   flags.txt               one kproxy flag per line (`--hostname-override=node-a`); blank lines and
 *                           lines starting with `#` are ignored; may be empty
 *   expected.nft            the dump: transactionText(createCommands) of every family
 *   expected-problems.txt   formatProblem() of every problem, one per line (empty when none)
 *   good.yaml (optional)    only the well-formed objects of input.yaml: the test then also checks
 *                           that every Service in it gets exactly the rules it gets alone
 *
 * To regenerate the expected files after an intended change, run
 *
 *   UPDATE_GOLDEN=1 npx vitest run test/golden.test.ts
 *
 * and review the diff like code. CI never sets UPDATE_GOLDEN: there a mismatch fails.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { ServicePortState } from '../src/model/node-state.ts';
import type { Ruleset } from '../src/backends/nftables/render/ruleset.ts';
import { elementKey, ruleText } from '../src/backends/nftables/render/syntax.ts';
import type { RenderedFamilies } from '../src/backends/nftables/render/layout.ts';
import { caseNames, GOLDEN_DIR, runCase, runPipeline } from './support/golden.ts';

const UPDATE = process.env['UPDATE_GOLDEN'] === '1';
if (UPDATE && process.env['CI'])
  throw new Error('UPDATE_GOLDEN must not be set in CI: golden files are regenerated locally and reviewed');

function problemsText(problems: readonly string[]): string {
  return problems.map((p) => `${p}\n`).join('');
}

// ---------------------------------------------------------------------------------------------
// "Exactly as alone": what the good objects get must not change when bad objects sit beside them.

/** Sets keyed by a frontend: `addr . proto . port [. source]` or `proto . port`. */
const FRONTEND_SETS: Readonly<Record<string, number>> = {
  'service-ips': 3,
  'no-endpoint-services': 3,
  'firewall-ips': 3,
  'firewall-allow': 3,
  'service-nodeports': 2,
  'no-endpoint-nodeports': 2,
};

function frontendOf(set: string, keyText: string): string | undefined {
  const parts = FRONTEND_SETS[set];
  if (parts === undefined) return undefined;
  const kind = parts === 2 ? 'nodeport' : 'address';
  return `${kind}:${keyText.split(' . ').slice(0, parts).join(' . ')}`;
}

/**
 * Every way `alone` (the good objects by themselves) can differ from `full` (the same objects
 * beside malformed or conflicting ones), as readable strings; empty when the good objects are
 * served exactly as alone:
 *  - each good service port's NodeState is identical;
 *  - each chain of the alone ruleset exists with identical rules;
 *  - each element of the alone ruleset exists with the same verdict;
 *  - no other element sits on a frontend (address.proto.port, or proto.port) the good objects use.
 */
function differencesFromAlone(alone: RenderedFamilies, full: RenderedFamilies): string[] {
  const out: string[] = [];
  alone.families.forEach((a, i) => {
    const f = full.families[i];
    if (!f) {
      out.push(`family ${a.state.family} missing`);
      return;
    }
    const fam = a.state.family;
    const fullPorts = new Map<string, ServicePortState>(f.state.servicePorts.map((sp) => [sp.key, sp]));
    for (const sp of a.state.servicePorts) {
      const other = fullPorts.get(sp.key);
      if (JSON.stringify(other) !== JSON.stringify(sp)) out.push(`${fam} ${sp.key}: state differs`);
    }
    out.push(...rulesetDifferences(fam, a.ruleset, f.ruleset));
  });
  return out;
}

function rulesetDifferences(fam: string, alone: Ruleset, full: Ruleset): string[] {
  const out: string[] = [];
  const fullChains = new Map(full.chains.map((c) => [c.name, c.rules.map(ruleText)]));
  for (const chain of alone.chains) {
    const rules = fullChains.get(chain.name);
    if (JSON.stringify(rules) !== JSON.stringify(chain.rules.map(ruleText)))
      out.push(`${fam} chain ${chain.name} differs`);
  }
  const goodFrontends = new Set<string>();
  for (const set of alone.sets) {
    for (const e of set.elements) {
      const fe = frontendOf(set.spec.name, elementKey(e));
      if (fe !== undefined) goodFrontends.add(fe);
    }
  }
  const fullSets = new Map(full.sets.map((s) => [s.spec.name, new Set(s.elements)]));
  for (const set of alone.sets) {
    const have = fullSets.get(set.spec.name) ?? new Set<string>();
    const want = new Set(set.elements);
    for (const text of want) if (!have.has(text)) out.push(`${fam} ${set.spec.name}: missing { ${text} }`);
    for (const text of have) {
      const fe = frontendOf(set.spec.name, elementKey(text));
      if (fe !== undefined && goodFrontends.has(fe) && !want.has(text))
        out.push(`${fam} ${set.spec.name}: extra { ${text} } on a good frontend`);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

describe('golden', () => {
  const cases = caseNames();

  it('has cases, each with input.yaml and flags.txt', () => {
    expect(cases.length).toBeGreaterThan(0);
    for (const name of cases) {
      expect(existsSync(join(GOLDEN_DIR, name, 'input.yaml')), `${name}/input.yaml`).toBe(true);
      expect(existsSync(join(GOLDEN_DIR, name, 'flags.txt')), `${name}/flags.txt`).toBe(true);
    }
  });

  for (const name of cases) {
    const dir = join(GOLDEN_DIR, name);
    it(name, () => {
      const run = runCase(name);
      for (const p of run.problems) expect(p, 'a problem must be one line').not.toMatch(/[\r\n]/);
      // Pure: a second run gives the same text.
      expect(runCase(name).nft).toBe(run.nft);

      const nftPath = join(dir, 'expected.nft');
      const problemsPath = join(dir, 'expected-problems.txt');
      if (UPDATE) {
        writeFileSync(nftPath, run.nft);
        writeFileSync(problemsPath, problemsText(run.problems));
      } else {
        expect(existsSync(nftPath), `${name}/expected.nft missing: run with UPDATE_GOLDEN=1 and review`).toBe(true);
        expect(run.nft).toBe(readFileSync(nftPath, 'utf8'));
        expect(problemsText(run.problems)).toBe(readFileSync(problemsPath, 'utf8'));
      }

      if (existsSync(join(dir, 'good.yaml'))) {
        const alone = runCase(name, 'good.yaml');
        expect(alone.problems, 'good.yaml must be free of problems').toEqual([]);
        expect(differencesFromAlone(alone.desired, run.desired)).toEqual([]);
      }
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Conflicts between Services over one frontend, found while reviewing the golden output.

const NODE_FLAGS = ['--hostname-override=node-a', '--cluster-cidr=10.244.0.0/16'];
const NODE_YAML = `
apiVersion: v1
kind: Node
metadata: { name: node-a }
status: { addresses: [{ type: InternalIP, address: 192.0.2.1 }] }
`;

function lbService(name: string, clusterIP: string, lbIP: string, ranges: string[] | undefined, extra = ''): string {
  return `
---
apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: shop }
spec:
  type: LoadBalancer
  clusterIP: ${clusterIP}
  ports: [{ name: https, port: 443, nodePort: ${name === 'aaa-owner' ? 30443 : 30444} }]
${ranges ? `  loadBalancerSourceRanges: ${JSON.stringify(ranges)}\n` : ''}${extra}status:
  loadBalancer: { ingress: [{ ip: ${lbIP} }] }
`;
}

function endpointsOf(name: string, ip: string): string {
  return `
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: ${name}-1, namespace: shop, labels: { kubernetes.io/service-name: ${name} } }
addressType: IPv4
ports: [{ name: https, port: 8443 }]
endpoints: [{ addresses: [${ip}], nodeName: node-b }]
`;
}

describe('golden: conflicting load-balancer IPs (suspected src bugs)', () => {
  const owner =
    lbService('aaa-owner', '10.96.0.1', '198.51.100.7', ['203.0.113.0/24']) + endpointsOf('aaa-owner', '10.244.1.1');
  const alone = () => runPipeline(NODE_YAML + owner, NODE_FLAGS);

  it('sanity: a second Service on another LB IP leaves the first as alone', () => {
    const other =
      lbService('zzz-other', '10.96.0.2', '198.51.100.8', ['0.0.0.0/0']) + endpointsOf('zzz-other', '10.244.1.2');
    const full = runPipeline(NODE_YAML + owner + other, NODE_FLAGS);
    expect(differencesFromAlone(alone().desired, full.desired)).toEqual([]);
  });

  // layout.ts addServicePort adds firewall-allow elements with `shared = true`, so the losing
  // Service's loadBalancerSourceRanges are admitted on the winner's LB frontend: 0.0.0.0/0 here
  // opens the owner's firewall to everyone. The conflict problem is reported, but the widening stays.
  it('a losing Service does not widen the owner\u2019s loadBalancerSourceRanges', () => {
    const thief =
      lbService('zzz-thief', '10.96.0.2', '198.51.100.7', ['0.0.0.0/0']) + endpointsOf('zzz-thief', '10.244.1.2');
    const full = runPipeline(NODE_YAML + owner + thief, NODE_FLAGS);
    expect(full.problems.some((p) => p.includes('198.51.100.7 . tcp . 443 is already used'))).toBe(true);
    expect(differencesFromAlone(alone().desired, full.desired)).toEqual([]);
  });

  // Ownership is checked per set, not per frontend: the owner without endpoints puts its LB
  // frontend in no-endpoint-services (reject), so the loser's service-ips element for the same
  // frontend is not a conflict, and the loser's Service gets the owner's LB IP (DNAT happens
  // before the reject check), with no problem reported.
  it('a losing Service does not take over the LB IP of an owner that has no endpoints', () => {
    const thief =
      lbService('zzz-thief', '10.96.0.2', '198.51.100.7', undefined) + endpointsOf('zzz-thief', '10.244.1.2');
    const ownerNoEndpoints = lbService('aaa-owner', '10.96.0.1', '198.51.100.7', ['203.0.113.0/24']);
    const aloneNoEndpoints = runPipeline(NODE_YAML + ownerNoEndpoints, NODE_FLAGS);
    const full = runPipeline(NODE_YAML + ownerNoEndpoints + thief, NODE_FLAGS);
    expect(differencesFromAlone(aloneNoEndpoints.desired, full.desired)).toEqual([]);
  });

  // The reverse: the loser has no endpoints, so its reject element lands in no-endpoint-services
  // on the owner's frontend (a different set from the owner's service-ips element). Mostly masked
  // because DNAT runs first, but it is still the loser's rule on the owner's frontend, unreported.
  it('a losing Service without endpoints puts no reject element on the owner\u2019s frontend', () => {
    const thief = lbService('zzz-thief', '10.96.0.2', '198.51.100.7', undefined);
    const full = runPipeline(NODE_YAML + owner + thief, NODE_FLAGS);
    expect(differencesFromAlone(alone().desired, full.desired)).toEqual([]);
  });
});
