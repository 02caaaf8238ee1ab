/**
 * @module backends/nftables/kernel/nf-tables-abi
 * The numbers of the kernel's nf_tables netlink interface (linux/netfilter/nf_tables.h) that
 * kproxy's netlink reads and writes use, and how the set field types kproxy declares lie in bytes.
 */

export const NFNL_SUBSYS_NFTABLES = 10;
export const NFT_MSG = { GETRULE: 7, NEWSETELEM: 12, GETSETELEM: 13, GETGEN: 16 } as const;
export const NFPROTO = { ip: 2, ip6: 10 } as const;
export const NLM_F_CREATE = 0x400;

export const RULE = { TABLE: 1, CHAIN: 2, USERDATA: 7 } as const;
export const GEN_ID = 1;
export const SETELEM_LIST = { TABLE: 1, SET: 2, ELEMENTS: 3 } as const;
/** NFTA_LIST_ELEM: one element inside SETELEM_LIST.ELEMENTS. */
export const LIST_ELEM = 1;
export const SETELEM = { KEY: 1, DATA: 2, FLAGS: 3, KEY_END: 10 } as const;
export const SET_ELEM_INTERVAL_END = 1;
export const DATA = { VALUE: 1, VERDICT: 2 } as const;
export const VERDICT = { CODE: 1, CHAIN: 2 } as const;
/** Verdict codes (NF_DROP, NF_ACCEPT, NFT_CONTINUE, NFT_JUMP, NFT_GOTO, NFT_RETURN) by nft's name. */
export const VERDICT_CODE: Readonly<Record<string, number>> = {
  drop: 0,
  accept: 1,
  continue: -1,
  jump: -3,
  goto: -4,
  return: -5,
};

/** Bytes of a field alone; inside a concatenation each takes a multiple of 4 (a register). */
export const FIELD_SIZE: Readonly<Record<string, number>> = {
  ipv4_addr: 4,
  ipv6_addr: 16,
  inet_proto: 1,
  inet_service: 2,
  integer: 4,
};

/** Width of a field in a key or data of `fields` fields. */
export function fieldWidth(size: number, fields: number): number {
  return fields > 1 ? (size + 3) & ~3 : size;
}

export const PROTOCOL_NUMBER: Readonly<Record<string, number>> = { tcp: 6, udp: 17, sctp: 132 };
