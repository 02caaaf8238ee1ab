/**
 * @module backends/ipvs/backend
 * IPVS mode behind the seam. Every sync reads what the kernel holds (`ipvsadm -Sn`, the
 * addresses, kproxy's helper tables), renders every family, and applies the difference in this
 * order (docs/adr/0006-ipvs-mode.md):
 *
 *   1. one `nft -f` transaction: helper rules and the ownership record for everything new, while
 *      keeping what is going away;
 *   2. one `ipvsadm -R` batch: services, real servers in, real servers out (TCP drains), services out;
 *   3. one `ip -batch`: addresses of new services onto kube-ipvs0, addresses nothing uses off it;
 *   4. one `nft -f` transaction removing what the batch removed (only when it removed something).
 *
 * Upstream's IPVS mode syncs in full every time, and so does this backend (the reconciler's
 * partial requests become full ones): IPVS state is read per sync anyway, to see draining real
 * servers' connections. Draining real servers are re-checked on every sync and on a timer.
 */
import type { Family } from '../../model/cluster.ts';
import { cidrContains } from '../../model/ip.ts';
import type { IpvsScheduler } from '../../model/ipvs-schedulers.ts';
import {
  nodeStateOf,
  type BackendDependencies,
  type FamilyState,
  type ProxyBackend,
  type SyncReport,
  type SyncRequest,
} from '../../proxy/backend.ts';
import type { ProxyConfig } from '../../config/proxy-config.ts';
import type { Exec } from '../../kernel/exec.ts';
import { KernelToolError } from '../../kernel/errors.ts';
import type { Logger } from '../../util/log.ts';
import type { Problem } from '../../util/problems.ts';
import { Nft } from '../nftables/kernel/nft.ts';
import { parseObservedTable, type ListedTable } from '../nftables/render/observed.ts';
import type { Fragment } from '../nftables/render/syntax.ts';
import { nftFamily } from '../nftables/render/syntax.ts';
import { Ipvsadm } from './kernel/ipvsadm.ts';
import { Links } from './kernel/links.ts';
import { describeIpvsDrift } from './render/drift.ts';
import { renderFamily, type KernelFacts } from './render/families.ts';
import { ownershipOf, planHelper } from './render/helper-plan.ts';
import type { DesiredVirtualServer, IpvsFamilyState } from './render/layout.ts';
import { TABLE } from './render/names.ts';
import { parseIpvsList, parseIpvsSave, type InterfaceAddress, type ObservedIpvs } from './render/observed.ts';
import { planAddresses, planIpvs, type IpvsPlan } from './render/plan.ts';
import { addressLine, DUMMY_INTERFACE, keyFamily, line, type VirtualServerKey } from './render/syntax.ts';

/** How long a TCP real server that goes may keep its connections (upstream: no bound). */
export const DEFAULT_DRAIN_TIMEOUT_MS = 15 * 60_000;
/** How often draining real servers are re-checked between syncs. */
export const DEFAULT_DRAIN_CHECK_MS = 15_000;

export interface IpvsBackendOptions {
  /** Milliseconds since some epoch; injectable for tests. */
  readonly clock?: () => number;
  readonly drainTimeoutMs?: number;
  /** 0: no timer (the caller re-checks with `checkDraining`). */
  readonly drainCheckMs?: number;
}

/** The kernel's state as one sync reads it. */
interface Observed {
  readonly ipvs: ObservedIpvs;
  readonly addresses: readonly InterfaceAddress[];
  readonly helper: ReadonlyMap<Family, ListedTable | undefined>;
}

interface Planned {
  readonly observed: Observed;
  readonly rendered: readonly IpvsFamilyState[];
  readonly before: readonly Fragment[];
  readonly after: readonly Fragment[];
  readonly ipvs: IpvsPlan;
  readonly addresses: { readonly add: readonly string[]; readonly remove: readonly string[] };
  readonly problems: readonly Problem[];
  /** Deletions of real servers that had drained: progress, not a difference. */
  readonly drained: ReadonlySet<string>;
}

/** The sysctls IPVS mode needs (upstream's NewProxier), set only where they differ. */
const SYSCTLS: readonly (readonly [string, string, string])[] = [
  ['net.ipv4.vs.conntrack', '1', 'so that conntrack sees IPVS flows and nat postrouting can masquerade them'],
  ['net.ipv4.vs.expire_nodest_conn', '1', 'so that connections to a deleted real server end on their next packet'],
  ['net.ipv4.vs.expire_quiescent_template', '1', 'so that ClientIP affinity leaves a real server with weight 0'],
  ['net.ipv4.ip_forward', '1', 'so that IPVS can forward to real servers'],
];
const STRICT_ARP: readonly (readonly [string, string, string])[] = [
  ['net.ipv4.conf.all.arp_ignore', '1', 'strictARP: answer ARP only for addresses of the receiving interface'],
  ['net.ipv4.conf.all.arp_announce', '2', 'strictARP: announce only addresses of the sending interface'],
];

export class IpvsProxyBackend implements ProxyBackend {
  private readonly config: ProxyConfig;
  private readonly log: Logger;
  private readonly ipvsadm: Ipvsadm;
  private readonly links: Links;
  private readonly nft: Nft;
  private readonly clock: () => number;
  private readonly drainTimeoutMs: number;
  private readonly drainCheckMs: number;
  private prepared = false;
  private readonly schedulers = new Map<IpvsScheduler, boolean>();
  /** Draining real servers (drainKey → since) as the last batch left them. */
  private draining: ReadonlyMap<string, number> = new Map();
  /** The families of the last completed sync (what a drain check re-applies); undefined after a failure. */
  private committed?: readonly FamilyState[];
  private queue: Promise<unknown> = Promise.resolve();
  private timer?: ReturnType<typeof setInterval>;

  constructor(deps: BackendDependencies, options: IpvsBackendOptions = {}) {
    this.config = deps.config;
    this.log = deps.log;
    const exec: Exec = deps.exec;
    this.ipvsadm = new Ipvsadm(exec);
    this.links = new Links(exec);
    this.nft = new Nft(exec);
    this.clock = options.clock ?? Date.now;
    this.drainTimeoutMs = options.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS;
    this.drainCheckMs = options.drainCheckMs ?? DEFAULT_DRAIN_CHECK_MS;
  }

  sync(request: SyncRequest): Promise<SyncReport> {
    return this.serial(async () => {
      const was = this.committed;
      this.committed = undefined;
      const planned = await this.plan(request.families);
      await this.apply(planned);
      this.committed = request.families;
      this.draining = planned.ipvs.draining;
      this.armTimer();
      const changes = changeCount(planned);
      const sameInput = was !== undefined && sameContexts(was, request.families);
      return {
        kind: 'full',
        changes,
        drift: sameInput && request.changed.size === 0 && changes - planned.drained.size > 0,
        problems: planned.problems,
        detail: {
          virtualServers: planned.rendered.map((r) => r.virtualServers.size),
          ipvsLines: planned.ipvs.lines.length,
          nftCommands: planned.before.length + planned.after.length,
          addressesAdded: planned.addresses.add.length,
          addressesRemoved: planned.addresses.remove.length,
          draining: planned.ipvs.draining.size,
        },
      };
    });
  }

  matches(families: readonly FamilyState[]): Promise<boolean> {
    return this.serial(async () => {
      const p = await this.plan(families);
      return changeCount(p) - p.drained.size === 0;
    });
  }

  /**
   * Reads only: none of the sysctls, timeouts or scheduler probes a sync's preparation writes (a
   * scheduler this process never probed counts as offered). Sysctls IPVS mode would set are listed too.
   */
  describeDrift(families: readonly FamilyState[]): Promise<string[]> {
    return this.serial(async () => {
      const p = await this.plan(families, { readOnly: true });
      const out: string[] = [];
      for (const [name, value, why] of this.sysctls()) {
        const current = await this.links.sysctl(name);
        if (current !== undefined && current !== value)
          out.push(`sysctl ${name} is ${current}; IPVS mode sets ${value} ${why}`);
      }
      out.push(
        ...describeIpvsDrift({
          helper: p.rendered.map((r) => ({ desired: r.ruleset, observed: p.observed.helper.get(r.family) })),
          ipvsLines: p.ipvs.lines.filter((l) => !p.drained.has(l)),
          addresses: p.addresses,
        }),
      );
      return out;
    });
  }

  /**
   * Re-checks draining real servers now: those without connections (or past the drain timeout)
   * are deleted. The timer calls this; tests call it with their clock.
   */
  checkDraining(): Promise<number> {
    return this.serial(async () => {
      const families = this.committed;
      if (!families || this.draining.size === 0) return 0;
      this.committed = undefined;
      const planned = await this.plan(families);
      await this.apply(planned);
      this.committed = families;
      this.draining = planned.ipvs.draining;
      if (this.draining.size === 0) this.stopTimer();
      return changeCount(planned);
    });
  }

  /** Removes kproxy's virtual servers (its own, outside excludeCIDRs), kube-ipvs0 and the helper tables. */
  cleanup(): Promise<string[]> {
    return this.serial(async () => {
      this.stopTimer();
      this.committed = undefined;
      const removed: string[] = [];
      let ipvs: ObservedIpvs | undefined;
      try {
        ipvs = parseIpvsSave(await this.ipvsadm.save());
      } catch (err) {
        if (!(err instanceof KernelToolError && err.code === 'Unavailable')) throw err;
      }
      const helper = await this.readHelperTables();
      if (ipvs) {
        const owned = new Set<string>();
        for (const fam of ['ipv4', 'ipv6'] as const)
          for (const k of ownershipOf(fam, helper.get(fam)).owned) owned.add(k);
        const lines: string[] = [];
        for (const [k, vs] of ipvs.virtualServers) {
          if (!owned.has(k) || this.excluded(vs.key)) continue;
          lines.push(line.deleteService(vs.key));
          removed.push(`virtual server ${k}`);
        }
        await this.ipvsadm.restore(lines);
      }
      if (await this.links.deleteDummy()) removed.push(`interface ${DUMMY_INTERFACE} with its addresses`);
      for (const fam of ['ip', 'ip6'] as const)
        if (await this.nft.deleteTable(fam, TABLE)) removed.push(`table ${fam} ${TABLE}`);
      return removed;
    });
  }

  // -------------------------------------------------------------------------------------------

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private armTimer(): void {
    if (this.draining.size === 0) {
      this.stopTimer();
      return;
    }
    if (this.timer || this.drainCheckMs <= 0) return;
    this.timer = setInterval(() => {
      this.checkDraining().catch((err: unknown) => {
        this.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'IPVS drain check failed');
      });
    }, this.drainCheckMs);
    this.timer.unref();
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private excluded(key: VirtualServerKey): boolean {
    if (key.kind !== 'address') return false;
    const ip = { family: keyFamily(key), text: key.ip };
    return this.config.ipvs.excludeCIDRs.some((c) => c.family === ip.family && cidrContains(c, ip));
  }

  /** Reads the kernel and plans the whole sync (no change made; `readOnly`: no preparation either). */
  private async plan(families: readonly FamilyState[], { readOnly = false } = {}): Promise<Planned> {
    if (!readOnly) await this.prepare();
    const observed = await this.observe();
    const available = readOnly ? this.schedulersNotRefused(families) : await this.availableSchedulers(families);
    const owned = new Set<string>();
    const priorMarks = new Map<Family, Map<string, number>>();
    for (const fam of ['ipv4', 'ipv6'] as const) {
      const o = ownershipOf(fam, observed.helper.get(fam));
      for (const k of o.owned) owned.add(k);
      priorMarks.set(fam, o.priorMarks);
    }
    const facts: KernelFacts = {
      localAddresses: (fam) => [
        ...new Set(
          observed.addresses
            .filter((a) => a.family === fam && a.ifname !== DUMMY_INTERFACE && a.scope !== 'host' && a.scope !== 'link')
            .map((a) => a.ip),
        ),
      ],
      availableSchedulers: available,
      priorMarks: (fam) => priorMarks.get(fam) ?? new Map(),
      takenMarks: (fam) =>
        new Set(
          [...observed.ipvs.virtualServers]
            .filter(([k, vs]) => vs.key.kind === 'fwmark' && vs.key.family === fam && !owned.has(k))
            .map(([, vs]) => (vs.key.kind === 'fwmark' ? vs.key.mark : 0)),
        ),
    };
    const rendered = families.map((f) => renderFamily(nodeStateOf(f), this.config.ipvs.scheduler, facts));
    const problems = rendered.flatMap((r) => r.problems);

    const before: Fragment[] = [];
    const after: Fragment[] = [];
    for (const r of rendered) {
      const hp = planHelper(r.ruleset, observed.helper.get(r.family));
      before.push(...hp.before);
      after.push(...hp.after);
    }

    const desired = new Map<string, DesiredVirtualServer>();
    for (const r of rendered) for (const [k, d] of r.virtualServers) desired.set(k, d);
    const input = {
      desired,
      observed: observed.ipvs,
      owned,
      excluded: (key: VirtualServerKey) => this.excluded(key),
      draining: this.draining,
      now: this.clock(),
      drainTimeoutMs: this.drainTimeoutMs,
    };
    let ipvs = planIpvs(input);
    if (ipvs.needsConnections) ipvs = planIpvs({ ...input, connections: parseIpvsList(await this.ipvsadm.list()) });
    for (const k of readOnly ? [] : ipvs.adopted)
      this.log.warn(
        { virtualServer: k },
        'IPVS virtual server kproxy did not create is now managed by kproxy (a Service uses it)',
      );

    const onDummy = new Set(observed.addresses.filter((a) => a.ifname === DUMMY_INTERFACE).map((a) => a.ip));
    const wanted = new Set(rendered.flatMap((r) => r.addresses));
    const addresses = planAddresses(wanted, onDummy, observed.ipvs, new Set(ipvs.deleted));
    const drained = new Set(ipvs.lines.filter((l) => l.startsWith('-d ') && wasDrained(l, observed.ipvs)));
    return { observed, rendered, before, after, ipvs, addresses, problems, drained };
  }

  private async apply(p: Planned): Promise<void> {
    await this.nft.apply(p.before);
    await this.ipvsadm.restore(p.ipvs.lines);
    if (p.addresses.add.length > 0 || p.rendered.some((r) => r.addresses.length > 0)) {
      if (await this.links.ensureDummy()) this.log.info(`created the dummy interface ${DUMMY_INTERFACE}`);
    }
    await this.links.batch([...p.addresses.add.map(addressLine.add), ...p.addresses.remove.map(addressLine.delete)]);
    await this.nft.apply(p.after);
  }

  private async observe(): Promise<Observed> {
    const [save, addresses, helper] = await Promise.all([
      this.ipvsadm.save(),
      this.links.addresses(),
      this.readHelperTables(),
    ]);
    return { ipvs: parseIpvsSave(save), addresses, helper };
  }

  private async readHelperTables(): Promise<Map<Family, ListedTable | undefined>> {
    const out = new Map<Family, ListedTable | undefined>();
    for (const fam of ['ipv4', 'ipv6'] as const) {
      const listing = await this.nft.listTable(nftFamily(fam), TABLE);
      out.set(fam, listing === undefined ? undefined : parseObservedTable(listing));
    }
    return out;
  }

  /** Once per process (again after a failure): IPVS present, sysctls, timeouts, the default scheduler. */
  private async prepare(): Promise<void> {
    if (this.prepared) return;
    try {
      await this.ipvsadm.save();
    } catch (err) {
      if (!(err instanceof KernelToolError && err.code === 'Unavailable') || !(await this.links.modprobe('ip_vs')))
        throw err;
      await this.ipvsadm.save();
    }
    for (const [name, value, why] of this.sysctls()) {
      const current = await this.links.sysctl(name);
      if (current === value) continue;
      if (current === undefined) {
        this.log.warn({ sysctl: name }, `cannot read ${name}; IPVS mode wants ${value} (${why})`);
        continue;
      }
      await this.links.setSysctl(name, value);
      this.log.info({ sysctl: name, was: current, now: value }, `set ${name}=${value} ${why}`);
    }
    const c = this.config.ipvs;
    if (c.tcpTimeoutSeconds > 0 || c.tcpFinTimeoutSeconds > 0 || c.udpTimeoutSeconds > 0) {
      const current = await this.ipvsadm.timeouts();
      const want = { tcp: c.tcpTimeoutSeconds, tcpFin: c.tcpFinTimeoutSeconds, udp: c.udpTimeoutSeconds };
      const differs =
        !current ||
        (want.tcp > 0 && want.tcp !== current.tcp) ||
        (want.tcpFin > 0 && want.tcpFin !== current.tcpFin) ||
        (want.udp > 0 && want.udp !== current.udp);
      if (differs) {
        await this.ipvsadm.setTimeouts(want);
        this.log.info(
          { ...want, was: current },
          'set the IPVS connection timeouts (ipvsadm --set; 0 keeps the kernel value)',
        );
      }
    }
    if (!(await this.offers(this.config.ipvs.scheduler))) {
      throw new KernelToolError(
        'Unavailable',
        `the kernel offers no IPVS scheduler ${JSON.stringify(this.config.ipvs.scheduler)} (module ip_vs_${this.config.ipvs.scheduler}); choose another with --ipvs-scheduler / ipvs.scheduler`,
        '',
      );
    }
    this.prepared = true;
  }

  private sysctls(): readonly (readonly [string, string, string])[] {
    return [...SYSCTLS, ...(this.config.ipvs.strictARP ? STRICT_ARP : [])];
  }

  private async offers(s: IpvsScheduler): Promise<boolean> {
    let known = this.schedulers.get(s);
    if (known === undefined) {
      known = await this.ipvsadm.offersScheduler(s);
      this.schedulers.set(s, known);
      if (!known) this.log.warn({ scheduler: s }, `the kernel offers no IPVS scheduler ${s} (module ip_vs_${s})`);
    }
    return known;
  }

  /** The schedulers the Services ask for that the kernel offers (each probed once per process). */
  private async availableSchedulers(families: readonly FamilyState[]): Promise<Set<IpvsScheduler>> {
    const out = new Set<IpvsScheduler>();
    for (const s of this.wantedSchedulers(families)) if (await this.offers(s)) out.add(s);
    return out;
  }

  /** Without probing (a probe writes a throw-away virtual server): all but those a probe refused. */
  private schedulersNotRefused(families: readonly FamilyState[]): Set<IpvsScheduler> {
    return new Set([...this.wantedSchedulers(families)].filter((s) => this.schedulers.get(s) !== false));
  }

  private wantedSchedulers(families: readonly FamilyState[]): Set<IpvsScheduler> {
    const wanted = new Set<IpvsScheduler>([this.config.ipvs.scheduler]);
    for (const f of families)
      for (const ports of f.services.values())
        for (const sp of ports) if (sp.ipvsScheduler) wanted.add(sp.ipvsScheduler);
    return wanted;
  }
}

function changeCount(p: Planned): number {
  return p.before.length + p.ipvs.lines.length + p.addresses.add.length + p.addresses.remove.length + p.after.length;
}

/** A `-d` line for a real server the kernel holds at weight 0 (it had drained). */
function wasDrained(l: string, observed: ObservedIpvs): boolean {
  for (const vs of observed.virtualServers.values()) {
    for (const rs of vs.realServers.values()) if (rs.weight === 0 && line.deleteServer(vs.key, rs) === l) return true;
  }
  return false;
}

function sameContexts(a: readonly FamilyState[], b: readonly FamilyState[]): boolean {
  return a.length === b.length && a.every((f, i) => JSON.stringify(f.context) === JSON.stringify(b[i]?.context));
}
