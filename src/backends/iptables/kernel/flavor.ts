/**
 * @module backends/iptables/kernel/flavor
 * Which iptables the host uses, decided once per process and never mixed (rules written through
 * both would race each other in the kernel). With `--iptables-flavor auto`, like upstream's image
 * wrapper (kubernetes-sigs/iptables-wrappers): the kubelet's marker chains in iptables-nft's mangle
 * table mean nft; rules in iptables-legacy mean legacy; otherwise nft. kproxy's own canary in one
 * flavor wins over both, so a restart adopts the rules it wrote.
 */
import type { IptablesFlavor } from '../../../config/proxy-config.ts';
import type { Exec } from '../../../kernel/exec.ts';
import type { Flavor } from './iptables.ts';

const KUBELET_MARKERS = /^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY) /m;
const KPROXY_CANARY = /^:KUBE-PROXY-CANARY /m;
/** The wrapper's threshold: a host with this many legacy rules is a legacy host. */
const LEGACY_RULES = 10;

export interface FlavorChoice {
  readonly flavor: Flavor;
  readonly reason: string;
}

export async function chooseFlavor(exec: Exec, wanted: IptablesFlavor): Promise<FlavorChoice> {
  if (wanted !== 'auto') return { flavor: wanted, reason: `--iptables-flavor ${wanted}` };
  const save = async (tool: string, args: string[] = []): Promise<string> => {
    const r = await exec(tool, args);
    return r.exitCode === 0 ? r.stdout : '';
  };
  const [nftMangle4, nftMangle6] = await Promise.all([
    save('iptables-nft-save', ['-t', 'mangle']),
    save('ip6tables-nft-save', ['-t', 'mangle']),
  ]);
  const [legacy4, legacy6] = await Promise.all([save('iptables-legacy-save'), save('ip6tables-legacy-save')]);
  const nftMangle = nftMangle4 + nftMangle6;
  const legacy = legacy4 + legacy6;
  if (KPROXY_CANARY.test(nftMangle)) return { flavor: 'nft', reason: "kproxy's canary is in iptables-nft" };
  if (KPROXY_CANARY.test(legacy)) return { flavor: 'legacy', reason: "kproxy's canary is in iptables-legacy" };
  if (KUBELET_MARKERS.test(nftMangle))
    return { flavor: 'nft', reason: "the kubelet's marker chains are in iptables-nft" };
  if (KUBELET_MARKERS.test(legacy))
    return { flavor: 'legacy', reason: "the kubelet's marker chains are in iptables-legacy" };
  const legacyRules = legacy.split('\n').filter((l) => l.startsWith('-')).length;
  if (legacyRules >= LEGACY_RULES) return { flavor: 'legacy', reason: `iptables-legacy holds ${legacyRules} rules` };
  return { flavor: 'nft', reason: 'no other iptables user found; iptables-nft is the default' };
}
