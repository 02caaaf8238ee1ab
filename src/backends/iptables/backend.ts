/**
 * @module backends/iptables/backend
 * iptables mode behind the seam, upstream's way: every sync is one `iptables-restore --noflush` per
 * family (all of it or none of it). A full sync renders everything, reads `iptables-save`, and
 * writes only the chains whose rules differ (none: nothing is written), deletes kproxy's stale
 * per-Service chains and adds missing jump rules; a partial sync rewrites the shared top-level
 * chains and the changed Services' chains only, and deletes the chains those Services no longer
 * need. Canary chains tell when someone else flushed the tables (firewalld reload, `iptables -F`).
 */
import type { Family } from '../../model/cluster.ts';
import type { Exec } from '../../kernel/exec.ts';
import type { Logger } from '../../util/log.ts';
import type { Problem } from '../../util/problems.ts';
import type {
  BackendDependencies,
  FamilyState,
  NodeContext,
  ProxyBackend,
  SyncReport,
  SyncRequest,
} from '../../proxy/backend.ts';
import type { ProxyConfig } from '../../config/proxy-config.ts';
import { chooseFlavor } from './kernel/flavor.ts';
import { Iptables } from './kernel/iptables.ts';
import { CANARY_CHAIN, isKproxyServiceChain, SKELETON_CHAINS } from './render/names.ts';
import { describeIptablesDrift } from './render/drift.ts';
import { planSync, type SyncPlan } from './render/plan.ts';
import { assembleRuleset, conflictProblems, contextOf } from './render/ruleset.ts';
import { parseIptablesSave, type SavedTables } from './render/saved.ts';
import { renderServicePort } from './render/service-port.ts';
import { restoreText } from './render/restore.ts';
import type { IptablesContext, PortRules } from './render/types.ts';

const NOTHING: SyncPlan = { text: '', changes: 0, chainsWritten: 0, chainsDeleted: 0, jumpsAdded: 0, jumpsDeleted: 0 };

/** What kproxy committed for a family, kept so a partial sync writes only what changed. */
interface Committed {
  readonly contextKey: string;
  readonly context: IptablesContext;
  /** Service key → its ports' rules. */
  readonly services: Map<string, readonly PortRules[]>;
}

export class IptablesProxyBackend implements ProxyBackend {
  private readonly config: ProxyConfig;
  private readonly exec: Exec;
  private readonly log: Logger;
  private iptables?: Iptables;
  private readonly committed = new Map<Family, Committed>();
  /** nf_conntrack_tcp_be_liberal, read once: when set, upstream does not drop INVALID packets. */
  private beLiberal?: boolean;
  private routeLocalnetSet = false;

  constructor(deps: BackendDependencies) {
    this.config = deps.config;
    this.exec = deps.exec;
    this.log = deps.log;
  }

  async sync(request: SyncRequest): Promise<SyncReport> {
    const ipt = await this.tools();
    const plans: { family: Family; plan: SyncPlan; next: Committed }[] = [];
    const problems: Problem[] = [];
    let full = false;
    let drift = false;
    for (const family of request.families) {
      const fam = family.context.family;
      const context = await this.contextFor(family.context);
      const contextKey = JSON.stringify(context);
      const was = this.committed.get(fam);
      if (request.full || !was || was.contextKey !== contextKey) {
        full = true;
        const services = renderServices(family, context);
        const ruleset = assembleRuleset(context, allPorts(services));
        problems.push(...conflictProblems(allPorts(services), serviceNames(family)));
        const observed = parseIptablesSave(await ipt.save(fam));
        const plan = planSync(ruleset, observed, 'all-differing');
        if (was?.contextKey === contextKey && request.changed.size === 0 && plan.changes > 0) drift = true;
        plans.push({ family: fam, plan, next: { contextKey, context, services } });
      } else if (![...request.changed].some((key) => was.services.has(key) || family.services.has(key))) {
        // Nothing that changed has ports in this family (a single-stack Service): no restore for it.
        problems.push(...conflictProblems(allPorts(was.services), serviceNames(family)));
        plans.push({ family: fam, plan: NOTHING, next: was });
      } else {
        const services = new Map(was.services);
        const chains = new Set<string>();
        const stale = new Set<string>();
        for (const key of request.changed) {
          for (const port of services.get(key) ?? []) for (const c of port.chains) stale.add(c.name);
          const ports = (family.services.get(key) ?? []).map((sp) => renderServicePort(sp, context));
          if (ports.length > 0) services.set(key, ports);
          else services.delete(key);
          for (const port of ports) for (const c of port.chains) chains.add(c.name);
        }
        for (const c of chains) stale.delete(c);
        const ruleset = assembleRuleset(context, allPorts(services));
        problems.push(...conflictProblems(allPorts(services), serviceNames(family)));
        // The shared top-level chains hold every Service's dispatch rules: rewritten on every sync, as upstream.
        for (const c of ruleset.chains) if (!isKproxyServiceChain(c.name)) chains.add(c.name);
        const plan = planSync(ruleset, undefined, { chains, deleteChains: stale });
        plans.push({ family: fam, plan, next: { contextKey, context, services } });
      }
    }
    // Unknown until each family's restore has gone through: a failure leaves the next sync full.
    this.committed.clear();
    for (const { family, plan } of plans) await ipt.restore(family, plan.text);
    for (const { family, next } of plans) this.committed.set(family, next);
    const changes = plans.reduce((n, p) => n + p.plan.changes, 0);
    return {
      kind: full ? 'full' : 'partial',
      changes,
      drift,
      problems,
      detail: {
        flavor: ipt.flavor,
        chainsWritten: plans.map((p) => p.plan.chainsWritten),
        chainsDeleted: plans.map((p) => p.plan.chainsDeleted),
        servicePorts: plans.map((p) => countPorts(p.next.services)),
      },
    };
  }

  async matches(families: readonly FamilyState[]): Promise<boolean> {
    const ipt = await this.tools();
    for (const family of families) {
      const context = await this.contextFor(family.context);
      const ruleset = assembleRuleset(context, allPorts(renderServices(family, context)));
      const observed = parseIptablesSave(await ipt.save(family.context.family));
      if (planSync(ruleset, observed, 'all-differing').changes > 0) return false;
    }
    return true;
  }

  async describeDrift(families: readonly FamilyState[]): Promise<string[]> {
    const ipt = await this.tools();
    const out: string[] = [];
    for (const family of families) {
      const context = await this.contextFor(family.context, { readOnly: true });
      const ruleset = assembleRuleset(context, allPorts(renderServices(family, context)));
      out.push(...describeIptablesDrift(ruleset, parseIptablesSave(await ipt.save(family.context.family))));
    }
    return out;
  }

  /**
   * Removes kproxy's jump rules, chains and canaries, as upstream's `--cleanup` does (it keeps
   * KUBE-FIREWALL and its jumps, which the kubelet shares); other software's rules stay.
   */
  async cleanup(): Promise<string[]> {
    const ipt = await this.tools();
    this.committed.clear();
    const removed: string[] = [];
    for (const family of ['ipv4', 'ipv6'] as const) {
      const saved = parseIptablesSave(await ipt.save(family));
      const { text, description } = cleanupInput(family, saved);
      await ipt.restore(family, text);
      removed.push(...description);
    }
    return removed;
  }

  watchForFlush(onLost: () => void, intervalMs: number): () => void {
    let busy = false;
    const timer = setInterval(() => {
      // Only after a sync put the canaries in: before it, their absence means nothing.
      if (busy || this.committed.size === 0 || !this.iptables) return;
      busy = true;
      const ipt = this.iptables;
      void Promise.all([...this.committed.keys()].map((f) => ipt.chainExists(f, 'mangle', CANARY_CHAIN)))
        .then((present) => {
          if (present.every(Boolean) || this.committed.size === 0) return;
          this.committed.clear();
          onLost();
        })
        .catch((err: unknown) => {
          this.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'iptables canary check failed');
        })
        .finally(() => {
          busy = false;
        });
    }, intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  /** The iptables flavor, chosen once per process and logged. */
  private async tools(): Promise<Iptables> {
    if (!this.iptables) {
      const choice = await chooseFlavor(this.exec, this.config.iptables.flavor);
      this.log.info({ flavor: choice.flavor, reason: choice.reason }, `iptables mode uses iptables-${choice.flavor}`);
      this.iptables = new Iptables(this.exec, choice.flavor);
    }
    return this.iptables;
  }

  /** The family's render context; reads the two kernel settings upstream reads, once. */
  private async contextFor(node: NodeContext, opts: { readonly readOnly?: boolean } = {}): Promise<IptablesContext> {
    if (this.beLiberal === undefined) {
      const r = await this.exec('sysctl', ['-n', 'net.netfilter.nf_conntrack_tcp_be_liberal']);
      this.beLiberal = r.exitCode === 0 && r.stdout.trim() !== '0';
    }
    const context = contextOf(node, {
      localhostNodePorts: this.config.iptables.localhostNodePorts,
      dropInvalid: !this.beLiberal,
    });
    if (context.localhostNodePorts && !this.routeLocalnetSet && !opts.readOnly) {
      // NodePorts on 127.0.0.1 need the kernel to route loopback-sourced DNAT (upstream sets this too).
      const r = await this.exec('sysctl', ['-w', 'net.ipv4.conf.all.route_localnet=1']);
      if (r.exitCode === 0) this.log.info('set net.ipv4.conf.all.route_localnet=1 for localhost NodePorts');
      else
        this.log.warn(
          { stderr: r.stderr.trim() },
          'could not set route_localnet: NodePorts on 127.0.0.1 will not answer',
        );
      this.routeLocalnetSet = true;
    }
    return context;
  }
}

function renderServices(family: FamilyState, context: IptablesContext): Map<string, readonly PortRules[]> {
  const out = new Map<string, readonly PortRules[]>();
  for (const [key, ports] of family.services)
    out.set(
      key,
      ports.map((sp) => renderServicePort(sp, context)),
    );
  return out;
}

/** Service port key → `namespace/name`, for problems. */
function serviceNames(family: FamilyState): Map<string, string> {
  const out = new Map<string, string>();
  for (const [service, ports] of family.services) for (const sp of ports) out.set(sp.key, service);
  return out;
}

function* allPorts(services: ReadonlyMap<string, readonly PortRules[]>): Generator<PortRules> {
  for (const ports of services.values()) yield* ports;
}

function countPorts(services: ReadonlyMap<string, readonly PortRules[]>): number {
  let n = 0;
  for (const ports of services.values()) n += ports.length;
  return n;
}

/** Restore input removing everything kproxy owns from `saved`, and a line per thing removed. */
function cleanupInput(family: Family, saved: SavedTables): { text: string; description: string[] } {
  const owned = (chain: string) =>
    chain !== 'KUBE-FIREWALL' && (SKELETON_CHAINS.has(chain) || isKproxyServiceChain(chain));
  const deleteJumps = [];
  const deleteChains = [];
  const description: string[] = [];
  for (const [table, chains] of saved) {
    for (const [chain, rules] of chains) {
      if (owned(chain)) {
        deleteChains.push({ table, name: chain });
        continue;
      }
      for (const rule of rules) {
        const target = / -j (KUBE-[A-Z0-9-]+)/.exec(` ${rule}`)?.[1];
        if (target && owned(target)) deleteJumps.push({ table, chain, rule });
      }
    }
  }
  for (const j of deleteJumps) description.push(`${family} ${j.table} ${j.chain}: ${j.rule}`);
  for (const c of deleteChains) description.push(`${family} ${c.table} chain ${c.name}`);
  if (deleteJumps.length === 0 && deleteChains.length === 0) return { text: '', description };
  return { text: restoreText(family, [], { deleteChains, deleteJumps }), description };
}
