// Grafana's own Dashboard type (@grafana/schema), as JSON can spell it: JSON has no enums,
// so where Grafana's types name an enum, each member's value is accepted, and nothing else.
// Checked against the newest release and the one grafana-foundation-sdk is pinned to.
import type { Dashboard } from "@grafana/schema";
import type { Dashboard as Dashboard116 } from "@grafana/schema-11.6";

type IsAny<T> = 0 extends 1 & T ? true : false;

export type Json<T> = IsAny<T> extends true ? T
  : T extends string ? `${T}`
  : T extends number | boolean | null | undefined ? T
  : T extends readonly (infer U)[] ? Json<U>[]
  : T extends object ? { [K in keyof T]: Json<T[K]> }
  : T;

export type JsonDashboard = Json<Dashboard>;
export type JsonDashboard116 = Json<Dashboard116>;
