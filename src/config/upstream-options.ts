/**
 * @module config/upstream-options
 * Upstream kube-proxy settings that are not about rules: node setup (conntrack, oom_score_adj),
 * logging format, bind-address hard fail, feature gates, the deprecated `--healthz-port` and
 * `--metrics-port`, and every setting kproxy refuses or does not need. Nothing upstream accepts is
 * dropped without a word: a setting kproxy cannot honour is a problem naming it, one that has no
 * effect in kproxy is a warning saying why.
 */
import { parseIp } from '../model/ip.ts';
import { formatMs, parseGoDuration } from './duration.ts';
import type { FileValues } from './file.ts';
import { parseGoBool, type FlagValues, type StringFlag } from './flags.ts';
import type { ConntrackConfig, LoggingFormat, NodeSetupConfig, NodeSetupStep } from './proxy-config.ts';

/** Upstream's defaults (pkg/proxy/apis/config/v1alpha1 and v1alpha2 defaults.go: the same). */
export const DEFAULT_CONNTRACK: ConntrackConfig = {
  maxPerCore: 32 * 1024,
  min: 128 * 1024,
  tcpEstablishedTimeoutSeconds: 24 * 3600,
  tcpCloseWaitTimeoutSeconds: 3600,
  tcpBeLiberal: false,
  udpTimeoutSeconds: 0,
  udpStreamTimeoutSeconds: 0,
};
/** qos.KubeProxyOOMScoreAdj. */
export const DEFAULT_OOM_SCORE_ADJ = -999;

interface Inputs {
  readonly flags: FlagValues;
  readonly file: FileValues;
  readonly problems: string[];
  readonly warnings: string[];
}

const NODE_SETUP_STEPS: readonly NodeSetupStep[] = ['oom-score-adj', 'conntrack', 'route-localnet'];

export function resolveNodeSetup(i: Inputs): NodeSetupConfig {
  return { skip: resolveSkip(i), conntrack: resolveConntrack(i), oomScoreAdj: resolveOomScoreAdj(i) };
}

/** kproxy's `--skip-node-setup oom-score-adj,conntrack,route-localnet`: steps left to someone else. */
function resolveSkip(i: Inputs): NodeSetupStep[] {
  const text = i.flags.strings.get('skip-node-setup');
  if (text === undefined || text.trim() === '') return [];
  const skip: NodeSetupStep[] = [];
  for (const part of text.split(',').map((p) => p.trim())) {
    const step = NODE_SETUP_STEPS.find((s) => s === part);
    if (step) skip.push(step);
    else
      i.problems.push(
        `--skip-node-setup: unknown step ${JSON.stringify(part)} (steps: ${NODE_SETUP_STEPS.join(', ')})`,
      );
  }
  return skip;
}

function resolveConntrack(i: Inputs): ConntrackConfig {
  const int = (flag: StringFlag, field: string, fallback: number): number => {
    const text = i.flags.strings.get(flag);
    if (text !== undefined) {
      if (/^-?\d{1,10}$/.test(text) && Number(text) >= 0 && Number(text) <= 2147483647) return Number(text);
      i.problems.push(`--${flag}: must be an integer 0..2147483647, got ${JSON.stringify(text)}`);
      return fallback;
    }
    const v = i.file.number(field);
    if (v === undefined) return fallback;
    if (v < 0) i.problems.push(`${i.file.path(field)}: must be greater than or equal to 0, got ${v}`);
    return v;
  };
  const seconds = (flag: StringFlag, field: string, fallback: number): number => {
    const text = i.flags.strings.get(flag);
    let ms: number | undefined;
    let where: string;
    if (text !== undefined) {
      where = `--${flag}`;
      ms = parseGoDuration(text);
      if (ms === undefined) {
        i.problems.push(
          `${where}: invalid duration ${JSON.stringify(text)} (examples: 24h, 1h, 30s; 0 leaves the kernel's)`,
        );
        return fallback;
      }
    } else {
      where = i.file.path(field);
      ms = i.file.number(field);
      if (ms === undefined) return fallback;
    }
    if (ms < 0) {
      i.problems.push(`${where}: must be greater than or equal to 0, got ${formatMs(ms)}`);
      return fallback;
    }
    // The sysctls hold whole seconds (upstream: Duration / time.Second, truncated).
    return Math.trunc(ms / 1000);
  };
  return {
    maxPerCore: int('conntrack-max-per-core', 'conntrack.maxPerCore', DEFAULT_CONNTRACK.maxPerCore),
    min: int('conntrack-min', 'conntrack.min', DEFAULT_CONNTRACK.min),
    tcpEstablishedTimeoutSeconds: seconds(
      'conntrack-tcp-timeout-established',
      'conntrack.tcpEstablishedTimeout',
      DEFAULT_CONNTRACK.tcpEstablishedTimeoutSeconds,
    ),
    tcpCloseWaitTimeoutSeconds: seconds(
      'conntrack-tcp-timeout-close-wait',
      'conntrack.tcpCloseWaitTimeout',
      DEFAULT_CONNTRACK.tcpCloseWaitTimeoutSeconds,
    ),
    tcpBeLiberal: i.flags.booleans.get('conntrack-tcp-be-liberal') ?? i.file.bool('conntrack.tcpBeLiberal') ?? false,
    udpTimeoutSeconds: seconds('conntrack-udp-timeout', 'conntrack.udpTimeout', 0),
    udpStreamTimeoutSeconds: seconds('conntrack-udp-timeout-stream', 'conntrack.udpStreamTimeout', 0),
  };
}

function resolveOomScoreAdj(i: Inputs): number {
  const text = i.flags.strings.get('oom-score-adj');
  if (text !== undefined) {
    const v = /^-?\d{1,4}$/.test(text) ? Number(text) : NaN;
    if (v >= -1000 && v <= 1000) return v;
    i.problems.push(`--oom-score-adj: must be an integer -1000..1000, got ${JSON.stringify(text)}`);
    return DEFAULT_OOM_SCORE_ADJ;
  }
  const v = i.file.number('oomScoreAdj');
  if (v === undefined) return DEFAULT_OOM_SCORE_ADJ;
  if (v < -1000 || v > 1000) {
    i.problems.push(`${i.file.path('oomScoreAdj')}: must be within -1000..1000, got ${v}`);
    return DEFAULT_OOM_SCORE_ADJ;
  }
  return v;
}

export function resolveLoggingFormat(i: Inputs): LoggingFormat {
  const flag = i.flags.strings.get('logging-format');
  const [text, where] =
    flag !== undefined ? [flag, '--logging-format'] : [i.file.string('logging.format'), 'logging.format'];
  // kproxy's default stays JSON lines (what its tests and log pipelines read); upstream's is text.
  if (text === undefined || text === '' || text === 'json') return 'json';
  if (text === 'text') return 'text';
  i.problems.push(`${where}: must be text or json, got ${JSON.stringify(text)}`);
  return 'json';
}

export function resolveBindAddressHardFail(i: Inputs): boolean {
  return i.flags.booleans.get('bind-address-hard-fail') ?? i.file.bool('bindAddressHardFail') ?? false;
}

/**
 * `--feature-gates A=true,B=false` over the file's `featureGates`. kproxy has no feature gates:
 * it behaves as upstream does with every gate at its default, which each given gate is told.
 */
export function resolveFeatureGates(i: Inputs): Record<string, boolean> {
  const gates = i.file.featureGates();
  const text = i.flags.strings.get('feature-gates');
  if (text !== undefined && text.trim() !== '') {
    for (const part of text.split(',')) {
      const [name = '', value = ''] = part.split('=').map((x) => x.trim());
      const b = parseGoBool(value);
      if (!/^[A-Za-z0-9]+$/.test(name) || b === undefined)
        i.problems.push(`--feature-gates: each entry must be Name=true|false, got ${JSON.stringify(part)}`);
      else gates[name] = b;
    }
  }
  for (const [name, value] of Object.entries(gates)) {
    i.warnings.push(
      `feature gate ${name}=${value}: kproxy has no feature gates; it behaves as kube-proxy with every gate at its default`,
    );
  }
  return gates;
}

/**
 * `--healthz-port` / `--metrics-port` (deprecated upstream, still accepted there): 0 disables the
 * server, another port replaces the bind address's port. Undefined when the flag is not given.
 */
export function deprecatedPort(i: Inputs, flag: 'healthz-port' | 'metrics-port', address: string): string | undefined {
  const text = i.flags.strings.get(flag);
  if (text === undefined) return undefined;
  const port = /^\d{1,5}$/.test(text) ? Number(text) : NaN;
  if (!(port >= 0 && port <= 65535)) {
    i.problems.push(`--${flag}: must be a port number 0..65535 (0 disables the server), got ${JSON.stringify(text)}`);
    return undefined;
  }
  if (port === 0) return '';
  const host = address === '' ? '0.0.0.0' : address.slice(0, address.lastIndexOf(':'));
  return `${host}:${port}`;
}

/** Settings kproxy refuses (it cannot do what they ask) or accepts without effect (it needs none). */
export function checkUnsupported(i: Inputs): void {
  const refuse = (given: boolean, where: string, why: string): void => {
    if (given) i.problems.push(`${where}: not supported: ${why}`);
  };
  const flagBool = (name: 'profiling'): boolean => i.flags.booleans.get(name) === true;
  const flagSet = (name: StringFlag): boolean => (i.flags.strings.get(name) ?? '') !== '';

  refuse(flagBool('profiling'), '--profiling', 'kproxy has no /debug/pprof (profile with node --cpu-prof)');
  refuse(
    i.file.bool('enableProfiling') === true,
    'enableProfiling',
    'kproxy has no /debug/pprof (profile with node --cpu-prof)',
  );
  for (const [set, where] of [
    [flagSet('show-hidden-metrics-for-version'), '--show-hidden-metrics-for-version'],
    [(i.file.string('showHiddenMetricsForVersion') ?? '') !== '', 'showHiddenMetricsForVersion'],
  ] as const)
    refuse(set, where, 'kproxy hides no metrics');
  refuse(flagSet('vmodule'), '--vmodule', 'kproxy logs at one verbosity (-v)');
  refuse(i.file.has('logging.vmodule'), 'logging.vmodule', 'kproxy logs at one verbosity (-v)');
  refuse(
    (i.file.string('portRange') ?? '') !== '',
    'portRange',
    'it belonged to the userspace proxy, which upstream removed',
  );
  refuse(i.file.bool('windows.runAsService') === true, 'windows.runAsService', 'kproxy runs on Linux only');
  refuse(
    i.file.bool('configHardFail') === false,
    i.file.path('configHardFail'),
    'an invalid configuration always stops kproxy at start (and is refused on reload, keeping the running one)',
  );
  // bindAddress/--bind-address: upstream's override of the node's primary IP; the unspecified address means none.
  for (const [text, where] of [
    [i.flags.strings.get('bind-address'), '--bind-address'],
    [i.file.string('bindAddress'), 'bindAddress'],
  ] as const) {
    if (text === undefined || text === '') continue;
    const ip = parseIp(text);
    if (ip === undefined || text !== text.trim())
      i.problems.push(`${where}: must be an IP address, got ${JSON.stringify(text)}`);
    else
      refuse(
        ip.text !== '0.0.0.0' && ip.text !== '::',
        where,
        `overriding the node's primary IP (${ip.text}); kproxy takes it from the Node object (leave 0.0.0.0)`,
      );
  }

  // Upstream's validation of the settings kproxy needs none of (validation.go).
  const fileConfigSync = i.file.number('configSyncPeriod');
  if (fileConfigSync !== undefined && fileConfigSync < 0)
    i.problems.push(`configSyncPeriod: must be greater than 0, got ${formatMs(fileConfigSync)}`);
  const fileBurst = i.file.number('clientConnection.burst');
  if (fileBurst !== undefined && fileBurst < 0)
    i.problems.push(`clientConnection.burst: must be greater than or equal to 0, got ${fileBurst}`);

  const logFlush = i.flags.strings.get('log-flush-frequency');
  if (logFlush !== undefined && parseGoDuration(logFlush) === undefined)
    i.problems.push(`--log-flush-frequency: invalid duration ${JSON.stringify(logFlush)}`);
  const configSync = i.flags.strings.get('config-sync-period');
  if (configSync !== undefined) {
    const ms = parseGoDuration(configSync);
    if (ms === undefined || ms <= 0)
      i.problems.push(`--config-sync-period: must be a positive duration, got ${JSON.stringify(configSync)}`);
    else
      i.warnings.push(
        "--config-sync-period: no effect: kproxy's watches deliver every change and need no periodic resync",
      );
  }
  const qps = i.flags.strings.get('kube-api-qps');
  if (qps !== undefined && !(Number(qps) >= 0))
    i.problems.push(`--kube-api-qps: must be a number, got ${JSON.stringify(qps)}`);
  const burst = i.flags.strings.get('kube-api-burst');
  if (burst !== undefined && !/^\d{1,9}$/.test(burst))
    i.problems.push(`--kube-api-burst: must be an integer, got ${JSON.stringify(burst)}`);
  if (qps !== undefined || burst !== undefined)
    i.warnings.push(
      '--kube-api-qps/--kube-api-burst: no effect: kproxy makes a handful of lists and watches, never throttled',
    );
  if (i.flags.strings.get('kube-api-content-type') !== undefined)
    i.warnings.push('--kube-api-content-type: no effect: kproxy always asks the API server for JSON');
}
