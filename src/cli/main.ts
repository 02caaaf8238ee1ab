/**
 * @module cli/main
 * The entry point: arguments and the configuration file are parsed here, then the command's own
 * module (commands/one-shot.ts: sync, dump, cleanup; commands/run.ts: the daemon) is loaded.
 *
 * Only Node's own modules load before the command is known: `--help` and `--version` cost a bare
 * Node start (docs/adr/0007). Configuration (yaml), logging (pino), the mode and the command's
 * modules are imported when a command runs.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import type { CommandFlag, Loaded } from '../config/load.ts';
import type { ProxyModeDefinition } from '../proxy/backend.ts';
import { packageVersion } from './version.ts';

const USAGE = `Usage: kproxy <command> [flags]
       kproxy [flags]            as kube-proxy: the daemon (kubeadm: --config=FILE --hostname-override=NODE),
                                 or with --cleanup, --init-only or --write-config-to FILE that, then exit
       kproxy --version | --help

Commands:
  sync     --manifests DIR   program this network namespace's kernel from the objects in DIR
  dump     --manifests DIR   print the rules sync would program; touches nothing. --format: nftables
                             mode nft|json, iptables mode restore, ipvs mode ipvsadm (virtual servers,
                             kube-ipvs0 addresses, helper rules); --ip-family ipv4|ipv6: one family
  cleanup                    remove kproxy's rules in the mode's engine (and nothing else)
  run                        the daemon: watch the API server (--kubeconfig, --master, or in-cluster)
                             or a directory (--manifests DIR) and keep the kernel in sync;
                             --audit-log PATH|- [--audit-log-max-size 10Mi]: one JSON line per sync
  explain  --src IP[:PORT] --dst IP:PORT [--proto tcp|udp|sctp] [--from pod|node|outside]
                             what this node's rules do with that packet, and why; --output text|json;
                             --local-addresses IP,...: the node's other addresses (NodePorts answer there);
                             --packets FILE|-: one packet per line, "SRC DST [PROTO] [FROM]"
  diff                       what differs between the kernel and the desired rules (needs root);
                             --manifests DIR --against DIR2: what changes from DIR to DIR2, and why
  trace    --service NS/NAME [--count N] [--timeout D (30s, 2m)]
                             nftables mode: trace new connections to the Service through this node's
                             rules (meta nftrace), each packet with its Service port, frontend, endpoint
                             and verdict; --output text|json (needs root)

Flags (upstream kube-proxy names): --config FILE, --proxy-mode nftables|nft|iptables|ipvs,
  --hostname-override, --cluster-cidr, --detect-local-mode, --pod-bridge-interface,
  --pod-interface-name-prefix, --masquerade-all, --nodeport-addresses, --iptables-masquerade-bit,
  --iptables-localhost-nodeports, -v N; for run also --kubeconfig, --master, --healthz-bind-address,
  --metrics-bind-address, --iptables-sync-period, --iptables-min-sync-period; ipvs mode:
  --ipvs-scheduler, --ipvs-sync-period, --ipvs-min-sync-period, --ipvs-exclude-cidrs, --ipvs-strict-arp,
  --ipvs-tcp-timeout, --ipvs-tcpfin-timeout, --ipvs-udp-timeout.
  kproxy's own: --iptables-flavor auto|nft|legacy (which iptables; default: detect as upstream's image does)
  Daemon (run, or no command) also: --logging-format text|json, --oom-score-adj, --conntrack-max-per-core,
  --conntrack-min, --conntrack-tcp-timeout-established, --conntrack-tcp-timeout-close-wait,
  --conntrack-tcp-be-liberal, --conntrack-udp-timeout, --conntrack-udp-timeout-stream, --bind-address-hard-fail,
  --feature-gates, --healthz-port, --metrics-port; kproxy's own --skip-node-setup oom-score-adj,conntrack,route-localnet.
`;

/** Each command's own flags (besides the configuration flags every command takes). */
export const COMMAND_FLAGS: Readonly<Record<string, readonly CommandFlag[]>> = {
  sync: ['manifests'],
  dump: ['manifests', 'format', 'ip-family'],
  cleanup: [],
  run: ['manifests', 'audit-log', 'audit-log-max-size'],
  explain: ['manifests', 'src', 'dst', 'proto', 'from', 'local-addresses', 'packets', 'output'],
  diff: ['manifests', 'against', 'output'],
  trace: ['manifests', 'service', 'count', 'timeout', 'output'],
};

/**
 * No command (flags only, or nothing): kube-proxy's own invocation, the daemon. bin/kproxy applies
 * the same rule before Node starts (the daemon's young-generation size; test/unit/bin.test.ts).
 */
export function isUpstreamInvocation(argv: readonly string[]): boolean {
  return argv[0] === undefined || (argv[0].startsWith('-') && !['--help', '-h', '--version'].includes(argv[0]));
}

/** Exit codes: 0 done, 1 the work failed (kernel, input), 2 usage or configuration error. */
export async function main(argv: readonly string[], out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const upstream = isUpstreamInvocation(argv);
  const [command = 'run', ...rest] = upstream ? ['run', ...argv] : argv;
  if (command === '--help' || command === '-h' || command === 'help') {
    out.write(USAGE);
    return 0;
  }
  if (command === '--version' || command === 'version' || (upstream && rest.some(isVersionFlag))) {
    out.write(`kproxy ${packageVersion()}\n`);
    return 0;
  }
  const own = COMMAND_FLAGS[command];
  // kube-proxy's own invocation (no command) also takes its one-shot flags.
  const upstreamOnly: readonly CommandFlag[] = ['cleanup', 'init-only', 'write-config-to'];
  const commandFlags = own && upstream ? [...own, ...upstreamOnly] : own;
  if (!commandFlags) {
    process.stderr.write(`kproxy: unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
    return 2;
  }
  // The modules every command needs, loaded together (their file reads overlap).
  const [{ ConfigError, loadProxyConfig }, { KernelToolError }, { loadProxyMode }, { createLogger }] =
    await Promise.all([
      import('../config/load.ts'),
      import('../kernel/errors.ts'),
      import('../proxy/modes.ts'),
      import('../util/log.ts'),
    ]);
  let loaded: Loaded;
  try {
    loaded = loadProxyConfig({
      argv: rest,
      hostname: hostname(),
      readFile: (p) => readFileSync(p, 'utf8'),
      commandFlags,
    });
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`kproxy: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const log = createLogger(loaded.config.verbosity, undefined, loaded.config.loggingFormat);
  for (const w of loaded.warnings) log.warn({ warning: w }, 'configuration warning');
  if (loaded.writeConfigTo !== undefined || loaded.initOnly || loaded.cleanup)
    return (await import('./commands/upstream-actions.ts')).runUpstreamAction(loaded, log);
  const loadMode = async (): Promise<ProxyModeDefinition | undefined> => {
    try {
      return await loadProxyMode(loaded.config.mode);
    } catch (err) {
      // A mode's folder failed to load: in practice its rules template (rules-templates/) is missing or invalid.
      log.error({ mode: loaded.config.mode }, `cannot load ${loaded.config.mode} mode: ${errorText(err)}`);
      return undefined;
    }
  };
  try {
    // Each command loads only its own modules (the daemon's, the Kubernetes client's) when run. The
    // daemon loads its mode itself, after its first list requests went out (docs/adr/0007).
    if (command === 'run') {
      const reload = (fileText: string): Loaded =>
        loadProxyConfig({ argv: rest, hostname: hostname(), readFile: () => fileText, commandFlags });
      return await (await import('./commands/run.ts')).runDaemon(loaded, log, loadMode, reload);
    }
    const mode = await loadMode();
    if (!mode) return 1;
    if (command === 'explain') return await (await import('./commands/explain.ts')).explain(loaded, log, out);
    if (command === 'trace') return await (await import('./commands/trace.ts')).trace(loaded, log, out);
    if (command === 'diff') return await (await import('./commands/diff.ts')).diff(loaded, mode, log, out);
    const oneShot = await import('./commands/one-shot.ts');
    switch (command) {
      case 'sync':
        return await oneShot.sync(loaded, mode, log);
      case 'dump':
        return await oneShot.dump(loaded, mode, log, out);
      default:
        return await oneShot.cleanup(loaded, mode, log);
    }
  } catch (err) {
    if (err instanceof KernelToolError) {
      log.error({ code: err.code }, err.message);
      return 1;
    }
    throw err;
  }
}

if (import.meta.main) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(
        `kproxy: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
      );
      process.exit(1);
    },
  );
}

/** `--version`, `--version=true|raw` (pflag's forms); `--version=false` is no request. */
function isVersionFlag(arg: string): boolean {
  return arg === '--version' || (arg.startsWith('--version=') && arg !== '--version=false');
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
