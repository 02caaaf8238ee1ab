/**
 * @module bench/scenarios
 * Every measurement the bench knows, in the order they run (later ones may read earlier results:
 * `upstream` computes its ratios from `cold-sync`). Add a module here to add a measurement.
 */
import type { Scenario } from '../scenario.ts';
import { coldSync } from './cold-sync.ts';
import { firstPacket } from './first-packet.ts';
import { ipvs } from './ipvs.ts';
import { incremental } from './incremental.ts';
import { modes } from './modes.ts';
import { run } from './run.ts';
import { upstreamColdSync } from './upstream-cold-sync.ts';

export const SCENARIOS: readonly Scenario[] = [coldSync, upstreamColdSync, modes, incremental, run, firstPacket, ipvs];
