/**
 * @module config/load
 * Builds the validated {@link ProxyConfig} from a subcommand's flags and an optional
 * KubeProxyConfiguration file (`--config`). Pure: the host name and file reading are injected.
 *
 * Precedence: explicitly given flags, then the file, then defaults. Every problem is collected and
 * reported at once in a {@link ConfigError}; unknown file fields are only warnings.
 */
import type { Cidr, Family } from '../model/cluster.ts';
import { cidrText, parseCidr, parseIp } from '../model/ip.ts';
import { formatMs, parseGoDuration } from './duration.ts';
import { type ConfigVersion, decodeKubeProxyConfiguration, EMPTY_FILE_VALUES, type FileValues } from './file.ts';
import { COMMAND_FLAGS, parseFlags, type CommandFlag, type FlagValues, type StringFlag } from './flags.ts';
import {
  checkUnsupported,
  deprecatedPort,
  resolveBindAddressHardFail,
  resolveFeatureGates,
  resolveLoggingFormat,
  resolveNodeSetup,
} from './upstream-options.ts';
import { DEFAULT_IPVS_SCHEDULER, IPVS_SCHEDULERS, isIpvsScheduler } from '../model/ipvs-schedulers.ts';
import type {
  DetectLocalConfig,
  IptablesFlavor,
  IpvsConfig,
  NodePortAddressesConfig,
  ProxyConfig,
  ProxyMode,
} from './proxy-config.ts';

export type { CommandFlag } from './flags.ts';

export interface LoadInputs {
  /** The arguments after the subcommand, e.g. `['--manifests', 'dir', '--proxy-mode', 'nft', '-v', '4']`. */
  readonly argv: readonly string[];
  /** The machine's host name (`os.hostname()`), used when no hostnameOverride is given. */
  readonly hostname: string;
  /** Reads the `--config` file; may throw (the error becomes a problem). */
  readonly readFile: (path: string) => string;
  /** Subcommand-specific flags this subcommand accepts; others are rejected. Default: all of them. */
  readonly commandFlags?: readonly CommandFlag[];
}

export interface Loaded {
  readonly config: ProxyConfig;
  /** Non-fatal findings, e.g. `unknown field "nftables.masqueradeAl"`; the CLI should log them. */
  readonly warnings: string[];
  /** `--manifests DIR`: read cluster objects from this directory instead of an API server. */
  readonly manifests?: string;
  /** `--format` (dump), checked against the mode's formats by the CLI. Absent: the mode's default. */
  readonly format?: string;
  /** `--ip-family ipv4|ipv6` (dump): only that family. */
  readonly ipFamily?: Family;
  /** `--kubeconfig`, else the file's `clientConnection.kubeconfig`; absent when neither is set. */
  readonly kubeconfig?: string;
  /** `--master`: the API server's address, overriding the kubeconfig's. */
  readonly master?: string;
  /** The `--config` path, when one was given. */
  readonly configFile?: string;
  /** The command's own flags as given (explain, diff, run's audit log), checked by the command. */
  readonly commandOptions: Readonly<Partial<Record<CommandFlag, string>>>;
  /** The config file's version (v1alpha1 without a file, as upstream's defaults). */
  readonly configVersion: ConfigVersion;
  /** `featureGates` and `--feature-gates`, as given (kproxy has none; each was warned about). */
  readonly featureGates: Readonly<Record<string, boolean>>;
  /** `--cleanup`: remove every mode's rules and exit. */
  readonly cleanup?: true;
  /** `--init-only`: the node setup (conntrack, oom_score_adj) and exit. */
  readonly initOnly?: true;
  /** `--write-config-to FILE`: write the effective configuration and exit. */
  readonly writeConfigTo?: string;
}

export class ConfigError extends Error {
  /** Every problem found, each starting with the flag (`--cluster-cidr`) or field path it is about. */
  readonly problems: string[];

  constructor(problems: string[], configFile?: string) {
    const where = configFile === undefined ? '' : ` (config file ${JSON.stringify(configFile)})`;
    super(`invalid configuration${where}:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

export const DEFAULT_HEALTHZ_PORT = 10256;
export const DEFAULT_METRICS_PORT = 10249;
export const DEFAULT_HEALTHZ_BIND_ADDRESS = `0.0.0.0:${DEFAULT_HEALTHZ_PORT}`;
export const DEFAULT_METRICS_BIND_ADDRESS = `127.0.0.1:${DEFAULT_METRICS_PORT}`;
export const DEFAULT_SYNC_PERIOD_MS = 30_000;
export const DEFAULT_MIN_SYNC_PERIOD_MS = 1_000;
export const DEFAULT_MASQUERADE_BIT = 14;
export const MAX_VERBOSITY = 10;

const DETECT_LOCAL_MODES = ['ClusterCIDR', 'NodeCIDR', 'BridgeInterface', 'InterfaceNamePrefix', 'None'] as const;
type DetectLocalMode = (typeof DETECT_LOCAL_MODES)[number];

/** A value and where it came from (`--flag` or a file field path), for messages. */
interface Sourced<T> {
  readonly value: T;
  readonly where: string;
}

export function loadProxyConfig(inputs: LoadInputs): Loaded {
  const problems: string[] = [];
  const warnings: string[] = [];
  const flags = parseFlags(inputs.argv, inputs.commandFlags ?? COMMAND_FLAGS, problems);

  const configFile = flags.strings.get('config');
  let file: FileValues = EMPTY_FILE_VALUES;
  if (configFile !== undefined) {
    if (configFile.trim() === '') problems.push('--config: must name a file');
    else file = readConfigFile(inputs, configFile, problems, warnings);
  }

  const s = new Sources(flags, file);
  const mode = resolveMode(s, problems);
  const nodeName = resolveNodeName(s, inputs.hostname, problems);
  const clusterCIDRs = resolveClusterCIDRs(s, problems);
  const detectLocal = resolveDetectLocal(s, problems);
  const nodePortAddresses = resolveNodePortAddresses(s, mode, problems);
  const { masqueradeAll, masqueradeBit } = resolveMasquerade(s, mode, problems);
  const { syncPeriodMs, minSyncPeriodMs } = resolveSyncPeriods(s, mode, problems);
  const iptables = resolveIptables(s, problems);
  const ipvs = resolveIpvs(s, mode, problems);
  const healthzAddress = resolveBindAddress(
    s,
    'healthz-bind-address',
    'healthzBindAddress',
    DEFAULT_HEALTHZ_BIND_ADDRESS,
    DEFAULT_HEALTHZ_PORT,
    problems,
  );
  const metricsAddress = resolveBindAddress(
    s,
    'metrics-bind-address',
    'metricsBindAddress',
    DEFAULT_METRICS_BIND_ADDRESS,
    DEFAULT_METRICS_PORT,
    problems,
  );
  const healthzBindAddress =
    deprecatedPort({ flags, file, problems, warnings }, 'healthz-port', healthzAddress) ?? healthzAddress;
  const metricsBindAddress =
    deprecatedPort({ flags, file, problems, warnings }, 'metrics-port', metricsAddress) ?? metricsAddress;
  const verbosity = resolveVerbosity(s, problems);
  const kernelToolTimeoutMs = resolveKernelToolTimeout(flags.strings.get('kernel-tool-timeout'), problems);
  const upstream = { flags, file, problems, warnings };
  checkUnsupported(upstream);
  const nodeSetup = resolveNodeSetup(upstream);
  const loggingFormat = resolveLoggingFormat(upstream);
  const bindAddressHardFail = resolveBindAddressHardFail(upstream);
  const featureGates = resolveFeatureGates(upstream);
  const cleanup = flags.booleans.get('cleanup') === true;
  const initOnly = flags.booleans.get('init-only') === true;
  const writeConfigTo = flags.strings.get('write-config-to');
  if (writeConfigTo !== undefined && writeConfigTo.trim() === '') problems.push('--write-config-to: must name a file');
  if ([cleanup, initOnly, writeConfigTo !== undefined].filter(Boolean).length > 1)
    problems.push('--cleanup, --init-only and --write-config-to: give at most one');

  const manifests = flags.strings.get('manifests');
  if (manifests !== undefined && manifests.trim() === '') problems.push('--manifests: must name a directory');
  const format = flags.strings.get('format');
  const ipFamilyText = flags.strings.get('ip-family');
  let ipFamily: Family | undefined;
  if (ipFamilyText !== undefined) {
    if (ipFamilyText === 'ipv4' || ipFamilyText === 'ipv6') ipFamily = ipFamilyText;
    else problems.push(`--ip-family: must be ipv4 or ipv6, got ${JSON.stringify(ipFamilyText)}`);
  }
  const kubeconfig = s.pickString('kubeconfig', 'clientConnection.kubeconfig')?.value;
  const master = flags.strings.get('master');
  if (master !== undefined && !/^https?:\/\/[^\s]+$/.test(master))
    problems.push(`--master: must be an http(s) URL, got ${JSON.stringify(master)}`);

  if (problems.length > 0) throw new ConfigError(problems, configFile);

  const config: ProxyConfig = {
    mode,
    nodeName,
    clusterCIDRs,
    detectLocal,
    nodePortAddresses,
    masqueradeAll,
    masqueradeBit,
    syncPeriodMs,
    minSyncPeriodMs,
    healthzBindAddress,
    metricsBindAddress,
    verbosity,
    iptables,
    ipvs,
    nodeSetup,
    bindAddressHardFail,
    loggingFormat,
    ...(kernelToolTimeoutMs !== undefined ? { kernelToolTimeoutMs } : {}),
  };
  return {
    config,
    warnings,
    configVersion: file.version ?? 'v1alpha1',
    featureGates,
    ...(cleanup ? { cleanup } : {}),
    ...(initOnly ? { initOnly } : {}),
    ...(writeConfigTo !== undefined ? { writeConfigTo } : {}),
    ...(manifests !== undefined ? { manifests } : {}),
    ...(format !== undefined ? { format } : {}),
    ...(ipFamily !== undefined ? { ipFamily } : {}),
    ...(kubeconfig !== undefined && kubeconfig !== '' ? { kubeconfig } : {}),
    ...(master !== undefined ? { master } : {}),
    ...(configFile !== undefined ? { configFile } : {}),
    commandOptions: Object.fromEntries(
      COMMAND_FLAGS.flatMap((f) => {
        // The boolean command flags (--cleanup, --init-only) are in Loaded itself.
        const v = (flags.strings as ReadonlyMap<string, string>).get(f);
        return v === undefined ? [] : [[f, v]];
      }),
    ),
  };
}

function readConfigFile(inputs: LoadInputs, path: string, problems: string[], warnings: string[]): FileValues {
  let text: string;
  try {
    text = inputs.readFile(path);
  } catch (e) {
    problems.push(`--config: cannot read ${JSON.stringify(path)}: ${e instanceof Error ? e.message : String(e)}`);
    return EMPTY_FILE_VALUES;
  }
  const fileProblems: string[] = [];
  const values = decodeKubeProxyConfiguration(text, fileProblems, warnings);
  problems.push(...fileProblems);
  return values;
}

/** Flag-over-file lookup. */
class Sources {
  readonly flags: FlagValues;
  readonly file: FileValues;

  constructor(flags: FlagValues, file: FileValues) {
    this.flags = flags;
    this.file = file;
  }

  /** The flag if given, else the file field if present (and a string). */
  pickString(flag: StringFlag | undefined, field: string | undefined): Sourced<string> | undefined {
    if (flag !== undefined) {
      const v = this.flags.strings.get(flag);
      if (v !== undefined) return { value: v, where: `--${flag}` };
    }
    if (field !== undefined) {
      const v = this.file.string(field);
      if (v !== undefined) return { value: v, where: this.file.path(field) };
    }
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// mode

function resolveMode(s: Sources, problems: string[]): ProxyMode {
  const m = s.pickString('proxy-mode', 'mode');
  if (m === undefined || m.value === '' || m.value === 'nftables' || m.value === 'nft') return 'nftables';
  if (m.value === 'iptables') return 'iptables';
  if (m.value === 'ipvs') return 'ipvs';
  problems.push(
    `${m.where}: invalid proxy mode ${JSON.stringify(m.value)} (supported: nftables, alias nft, iptables and ipvs)`,
  );
  return 'nftables';
}

// ---------------------------------------------------------------------------------------------
// node name

const DNS1123_LABEL = '[a-z0-9]([-a-z0-9]*[a-z0-9])?';
const DNS1123_SUBDOMAIN = new RegExp(`^${DNS1123_LABEL}(\\.${DNS1123_LABEL})*$`);

export function isDns1123Subdomain(name: string): boolean {
  return name.length <= 253 && DNS1123_SUBDOMAIN.test(name);
}

function resolveNodeName(s: Sources, hostname: string, problems: string[]): string {
  const override = s.pickString('hostname-override', 'hostnameOverride');
  // Like upstream GetHostname: an empty override means "use the host name"; a blank one is an error.
  const src: Sourced<string> =
    override !== undefined && override.value !== ''
      ? override
      : { value: hostname, where: 'host name (set --hostname-override)' };
  const name = src.value.trim().toLowerCase();
  if (name === '') {
    problems.push(`${src.where}: node name is empty`);
    return '';
  }
  if (!isDns1123Subdomain(name)) {
    problems.push(
      `${src.where}: node name ${JSON.stringify(name)} is not a valid DNS-1123 subdomain (lower-case letters, digits, '-' and '.', at most 253 characters)`,
    );
  }
  return name;
}

// ---------------------------------------------------------------------------------------------
// cluster CIDRs

function resolveClusterCIDRs(s: Sources, problems: string[]): Cidr[] {
  const src = s.pickString('cluster-cidr', 'clusterCIDR');
  if (src === undefined || src.value.trim() === '') return [];
  const cidrs: Cidr[] = [];
  let ok = true;
  for (const part of src.value.split(',')) {
    const c = parseCidr(part);
    if (c === undefined) {
      problems.push(`${src.where}: invalid CIDR ${JSON.stringify(part.trim())}`);
      ok = false;
    } else cidrs.push(c);
  }
  if (!ok) return [];
  for (const family of ['ipv4', 'ipv6'] as const) {
    const same = cidrs.filter((c) => c.family === family);
    if (same.length > 1) {
      problems.push(
        `${src.where}: at most one CIDR per IP family, got ${same.length} ${family === 'ipv4' ? 'IPv4' : 'IPv6'} CIDRs (${same.map((c) => cidrText(c)).join(', ')})`,
      );
    }
  }
  return cidrs;
}

// ---------------------------------------------------------------------------------------------
// detect-local

const INTERFACE_NAME = /^[A-Za-z0-9_.-]{1,15}$/;

/**
 * Linux interface names (IFNAMSIZ 16 incl. NUL) restricted to a safe character set, because the
 * name ends up in nft rule text.
 */
export function isSafeInterfaceName(name: string): boolean {
  return INTERFACE_NAME.test(name) && name !== '.' && name !== '..';
}

function isDetectLocalMode(v: string): v is DetectLocalMode {
  return (DETECT_LOCAL_MODES as readonly string[]).includes(v);
}

function resolveDetectLocal(s: Sources, problems: string[]): DetectLocalConfig {
  const src = s.pickString('detect-local-mode', 'detectLocalMode');
  const mode = src === undefined || src.value === '' ? 'ClusterCIDR' : src.value;
  if (!isDetectLocalMode(mode)) {
    problems.push(
      `${src?.where ?? 'detectLocalMode'}: invalid detect-local mode ${JSON.stringify(mode)} (valid: ${DETECT_LOCAL_MODES.join(', ')})`,
    );
    return { mode: 'ClusterCIDR' };
  }
  switch (mode) {
    case 'ClusterCIDR':
    case 'NodeCIDR':
    case 'None':
      return { mode };
    case 'BridgeInterface': {
      const name = interfaceName(
        s,
        'pod-bridge-interface',
        'detectLocal.bridgeInterface',
        mode,
        'bridge interface',
        problems,
      );
      return { mode, bridgeInterface: name };
    }
    case 'InterfaceNamePrefix': {
      const prefix = interfaceName(
        s,
        'pod-interface-name-prefix',
        'detectLocal.interfaceNamePrefix',
        mode,
        'interface name prefix',
        problems,
      );
      return { mode, interfaceNamePrefix: prefix };
    }
  }
}

function interfaceName(
  s: Sources,
  flag: StringFlag,
  field: string,
  mode: DetectLocalMode,
  what: string,
  problems: string[],
): string {
  const src = s.pickString(flag, field);
  if (src === undefined || src.value === '') {
    problems.push(`${s.file.path(field)} (--${flag}): required when detectLocalMode is ${mode}`);
    return '';
  }
  if (!isSafeInterfaceName(src.value)) {
    problems.push(
      `${src.where}: invalid ${what} ${JSON.stringify(src.value)} (1 to 15 characters of A-Z a-z 0-9 _ . -)`,
    );
    return '';
  }
  return src.value;
}

// ---------------------------------------------------------------------------------------------
// nodePortAddresses

const NODE_PORT_KEYWORDS = ['primary', 'all'] as const;

function resolveNodePortAddresses(s: Sources, mode: ProxyMode, problems: string[]): NodePortAddressesConfig {
  const flag = s.flags.strings.get('nodeport-addresses');
  let entries: { text: string; where: string }[];
  let where: string;
  if (flag !== undefined) {
    where = '--nodeport-addresses';
    entries = flag.trim() === '' ? [] : flag.split(',').map((text) => ({ text: text.trim(), where }));
  } else {
    where = 'nodePortAddresses';
    entries = (s.file.list('nodePortAddresses') ?? []).map((text, i) => ({
      text: text.trim(),
      where: `${where}[${i}]`,
    }));
  }
  // Upstream's defaults differ by mode: iptables and IPVS answer on every local address, nftables on the primary node IPs.
  if (entries.length === 0) return mode === 'iptables' || mode === 'ipvs' ? { kind: 'all' } : { kind: 'primary' };

  const keyword = entries.find((e) => (NODE_PORT_KEYWORDS as readonly string[]).includes(e.text));
  if (keyword !== undefined) {
    if (entries.length > 1) {
      problems.push(
        `${where}: ${JSON.stringify(keyword.text)} must be the only entry (it cannot be combined with other entries)`,
      );
      return { kind: 'primary' };
    }
    return keyword.text === 'all' ? { kind: 'all' } : { kind: 'primary' };
  }
  const cidrs: Cidr[] = [];
  for (const e of entries) {
    const c = parseCidr(e.text);
    if (c === undefined)
      problems.push(
        `${e.where}: invalid CIDR ${JSON.stringify(e.text)} (expected CIDRs, or exactly one of "primary", "all")`,
      );
    else cidrs.push(c);
  }
  return { kind: 'cidrs', cidrs };
}

// ---------------------------------------------------------------------------------------------
// masquerade

/** The config file's per-mode sections, the running mode's first: its value wins where both are set. */
function modeSections(mode: ProxyMode): readonly string[] {
  // Upstream's IPVS mode takes masqueradeAll and masqueradeBit from the iptables section.
  if (mode === 'ipvs') return ['ipvs', 'iptables', 'nftables'];
  return mode === 'iptables' ? ['iptables', 'nftables'] : ['nftables', 'iptables'];
}

function resolveMasquerade(
  s: Sources,
  mode: ProxyMode,
  problems: string[],
): { masqueradeAll: boolean; masqueradeBit: number } {
  const flag = s.flags.booleans.get('masquerade-all');
  const masqueradeAll = flag ?? modeSections(mode).some((section) => s.file.bool(`${section}.masqueradeAll`) === true);

  const bitFlag = s.flags.strings.get('iptables-masquerade-bit');
  if (bitFlag !== undefined) {
    const bit = /^\d{1,2}$/.test(bitFlag) ? Number(bitFlag) : NaN;
    if (!(bit >= 0 && bit <= 31)) {
      problems.push(`--iptables-masquerade-bit: must be an integer 0..31, got ${JSON.stringify(bitFlag)}`);
      return { masqueradeAll, masqueradeBit: DEFAULT_MASQUERADE_BIT };
    }
    return { masqueradeAll, masqueradeBit: bit };
  }
  let masqueradeBit = DEFAULT_MASQUERADE_BIT;
  let chosen = false;
  for (const field of modeSections(mode).map((section) => `${section}.masqueradeBit`)) {
    const bit = s.file.number(field);
    if (bit === undefined) continue;
    if (bit < 0 || bit > 31) problems.push(`${s.file.path(field)}: must be an integer 0..31, got ${bit}`);
    else if (!chosen) {
      masqueradeBit = bit;
      chosen = true;
    }
  }
  return { masqueradeAll, masqueradeBit };
}

// ---------------------------------------------------------------------------------------------
// kernel tool timeout (kproxy's own flag)

function resolveKernelToolTimeout(text: string | undefined, problems: string[]): number | undefined {
  if (text === undefined) return undefined;
  const ms = parseGoDuration(text);
  if (ms === undefined || ms <= 0) {
    problems.push(`--kernel-tool-timeout: must be a positive duration (e.g. 30s), got ${JSON.stringify(text)}`);
    return undefined;
  }
  return ms;
}

// ---------------------------------------------------------------------------------------------
// sync periods

function resolveSyncPeriods(
  s: Sources,
  mode: ProxyMode,
  problems: string[],
): { syncPeriodMs: number; minSyncPeriodMs: number } {
  const ipvs = mode === 'ipvs';
  const sync = resolveDuration(
    s,
    mode,
    ipvs ? 'ipvs-sync-period' : 'iptables-sync-period',
    'syncPeriod',
    DEFAULT_SYNC_PERIOD_MS,
    problems,
  );
  const min = resolveDuration(
    s,
    mode,
    ipvs ? 'ipvs-min-sync-period' : 'iptables-min-sync-period',
    'minSyncPeriod',
    DEFAULT_MIN_SYNC_PERIOD_MS,
    problems,
  );
  let ok = true;
  if (sync !== undefined && sync.value <= 0) {
    problems.push(`${sync.where}: must be greater than 0, got ${formatMs(sync.value)}`);
    ok = false;
  }
  if (min !== undefined && min.value < 0) {
    problems.push(`${min.where}: must be greater than or equal to 0, got ${formatMs(min.value)}`);
    ok = false;
  }
  if (ok && sync !== undefined && min !== undefined && min.value > sync.value) {
    problems.push(
      `${sync.where}: must be greater than or equal to ${min.where} (${formatMs(sync.value)} < ${formatMs(min.value)})`,
    );
  }
  return {
    syncPeriodMs: sync?.value ?? DEFAULT_SYNC_PERIOD_MS,
    minSyncPeriodMs: min?.value ?? DEFAULT_MIN_SYNC_PERIOD_MS,
  };
}

/**
 * The flag if given (any value, validated by the caller), else `<mode>.<name>`, else the other
 * mode's section, else the default. In the file a zero duration means "unset", as upstream's
 * defaulting treats it. Undefined when the flag does not parse (the problem is recorded).
 */
function resolveDuration(
  s: Sources,
  mode: ProxyMode,
  flag: StringFlag,
  name: string,
  fallback: number,
  problems: string[],
): Sourced<number> | undefined {
  const text = s.flags.strings.get(flag);
  if (text !== undefined) {
    const ms = parseGoDuration(text);
    if (ms === undefined) {
      problems.push(`--${flag}: invalid duration ${JSON.stringify(text)} (examples: 30s, 1m, 500ms, 1h2m)`);
      return undefined;
    }
    return { value: ms, where: `--${flag}` };
  }
  for (const field of modeSections(mode).map((section) => `${section}.${name}`)) {
    const ms = s.file.number(field);
    if (ms !== undefined && ms !== 0) return { value: ms, where: s.file.path(field) };
  }
  return { value: fallback, where: `${name} (default)` };
}

// ---------------------------------------------------------------------------------------------
// iptables mode

const IPTABLES_FLAVORS: readonly IptablesFlavor[] = ['auto', 'nft', 'legacy'];

function resolveIptables(s: Sources, problems: string[]): ProxyConfig['iptables'] {
  // Upstream's default is true in v1alpha1 (and without a file), false in v1alpha2.
  const localhostNodePorts =
    s.flags.booleans.get('iptables-localhost-nodeports') ??
    s.file.bool('iptables.localhostNodePorts') ??
    s.file.version !== 'v1alpha2';
  const flavorText = s.flags.strings.get('iptables-flavor') ?? 'auto';
  let flavor: IptablesFlavor = 'auto';
  if ((IPTABLES_FLAVORS as readonly string[]).includes(flavorText)) flavor = flavorText as IptablesFlavor;
  else
    problems.push(
      `--iptables-flavor: must be one of ${IPTABLES_FLAVORS.join(', ')}, got ${JSON.stringify(flavorText)}`,
    );
  return { localhostNodePorts, flavor };
}

// ---------------------------------------------------------------------------------------------
// IPVS mode

/** The kernel keeps IPVS timeouts in jiffies in an int: at most INT_MAX / HZ(1000) seconds. */
const MAX_IPVS_TIMEOUT_SECONDS = 2_147_483;

/**
 * The `ipvs:` section and the `--ipvs-*` flags. Checked only in IPVS mode, as upstream validates
 * the section only when it runs it; other modes get the defaults.
 */
function resolveIpvs(s: Sources, mode: ProxyMode, modeProblems: string[]): IpvsConfig {
  const problems: string[] = [];
  const schedulerSrc = s.pickString('ipvs-scheduler', 'ipvs.scheduler');
  let scheduler = DEFAULT_IPVS_SCHEDULER;
  if (schedulerSrc !== undefined && schedulerSrc.value !== '') {
    if (isIpvsScheduler(schedulerSrc.value)) scheduler = schedulerSrc.value;
    else
      problems.push(
        `${schedulerSrc.where}: unknown IPVS scheduler ${JSON.stringify(schedulerSrc.value)} (one of ${IPVS_SCHEDULERS.join(', ')})`,
      );
  }

  const excludeFlag = s.flags.strings.get('ipvs-exclude-cidrs');
  const excludeEntries =
    excludeFlag !== undefined
      ? excludeFlag.trim() === ''
        ? []
        : excludeFlag.split(',').map((text) => ({ text: text.trim(), where: '--ipvs-exclude-cidrs' }))
      : (s.file.list('ipvs.excludeCIDRs') ?? []).map((text, i) => ({
          text: text.trim(),
          where: `ipvs.excludeCIDRs[${i}]`,
        }));
  const excludeCIDRs: Cidr[] = [];
  for (const e of excludeEntries) {
    const c = parseCidr(e.text);
    if (c === undefined) problems.push(`${e.where}: invalid CIDR ${JSON.stringify(e.text)}`);
    else excludeCIDRs.push(c);
  }

  const strictARP = s.flags.booleans.get('ipvs-strict-arp') ?? s.file.bool('ipvs.strictARP') ?? false;

  const timeout = (flag: StringFlag, field: string): number => {
    const text = s.flags.strings.get(flag);
    let ms: number | undefined;
    let where: string;
    if (text !== undefined) {
      where = `--${flag}`;
      ms = parseGoDuration(text);
      if (ms === undefined) {
        problems.push(`${where}: invalid duration ${JSON.stringify(text)} (examples: 900s, 15m, 0 keeps the kernel's)`);
        return 0;
      }
    } else {
      where = s.file.path(field);
      ms = s.file.number(field);
      if (ms === undefined) return 0;
    }
    // Upstream converts to whole seconds (Duration.Seconds(), truncated).
    const seconds = Math.trunc(ms / 1000);
    if (ms < 0 || seconds > MAX_IPVS_TIMEOUT_SECONDS) {
      problems.push(
        `${where}: must be 0 (keep the kernel's) or up to ${MAX_IPVS_TIMEOUT_SECONDS}s, got ${formatMs(ms)}`,
      );
      return 0;
    }
    return seconds;
  };
  const tcpTimeoutSeconds = timeout('ipvs-tcp-timeout', 'ipvs.tcpTimeout');
  const tcpFinTimeoutSeconds = timeout('ipvs-tcpfin-timeout', 'ipvs.tcpFinTimeout');
  const udpTimeoutSeconds = timeout('ipvs-udp-timeout', 'ipvs.udpTimeout');

  if (mode !== 'ipvs') {
    return {
      scheduler: DEFAULT_IPVS_SCHEDULER,
      excludeCIDRs: [],
      strictARP: false,
      tcpTimeoutSeconds: 0,
      tcpFinTimeoutSeconds: 0,
      udpTimeoutSeconds: 0,
    };
  }
  modeProblems.push(...problems);
  return { scheduler, excludeCIDRs, strictARP, tcpTimeoutSeconds, tcpFinTimeoutSeconds, udpTimeoutSeconds };
}

// ---------------------------------------------------------------------------------------------
// bind addresses

/**
 * `IP:port`, `[IPv6]:port`, or a bare IP (the default port is appended, as upstream does).
 * Returns canonical text, or undefined when invalid.
 */
export function parseBindAddress(text: string, defaultPort: number): string | undefined {
  let host: string;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(text);
  if (bracketed) {
    host = bracketed[1] ?? '';
    portText = bracketed[2];
  } else if (text.split(':').length === 2) {
    [host = '', portText] = text.split(':');
  } else {
    host = text;
  }
  const ip = parseIp(host);
  if (ip === undefined || host !== host.trim() || (bracketed && ip.family !== 'ipv6')) return undefined;
  let port = defaultPort;
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText)) return undefined;
    port = Number(portText);
    if (port < 1 || port > 65535) return undefined;
  }
  return ip.family === 'ipv6' ? `[${ip.text}]:${port}` : `${ip.text}:${port}`;
}

function resolveBindAddress(
  s: Sources,
  flag: StringFlag,
  field: string,
  fallback: string,
  defaultPort: number,
  problems: string[],
): string {
  const flagValue = s.flags.strings.get(flag);
  // An explicitly empty flag disables the server (upstream); an empty file field means "default".
  if (flagValue === '') return '';
  const fileValue = s.file.string(field);
  const src: Sourced<string> | undefined =
    flagValue !== undefined
      ? { value: flagValue, where: `--${flag}` }
      : fileValue !== undefined && fileValue !== ''
        ? { value: fileValue, where: s.file.path(field) }
        : undefined;
  if (src === undefined) return fallback;
  const parsed = parseBindAddress(src.value, defaultPort);
  if (parsed === undefined) {
    problems.push(
      `${src.where}: must be IP:port (e.g. ${fallback} or [::]:${defaultPort}) or a bare IP, got ${JSON.stringify(src.value)}`,
    );
    return fallback;
  }
  return parsed;
}

// ---------------------------------------------------------------------------------------------
// verbosity

function resolveVerbosity(s: Sources, problems: string[]): number {
  const flag = s.flags.strings.get('v');
  if (flag !== undefined) {
    const v = /^\d{1,2}$/.test(flag) ? Number(flag) : NaN;
    if (!(v >= 0 && v <= MAX_VERBOSITY)) {
      problems.push(`--v: must be an integer 0..${MAX_VERBOSITY}, got ${JSON.stringify(flag)}`);
      return 0;
    }
    return v;
  }
  const v = s.file.number('logging.verbosity');
  if (v === undefined) return 0;
  if (v > MAX_VERBOSITY) {
    problems.push(`logging.verbosity: must be an integer 0..${MAX_VERBOSITY}, got ${v}`);
    return 0;
  }
  return v;
}
