// Package detect turns the stream of access events into alerts: ten built-in
// detectors and custom CEL rules, alerts grouped into incidents, and opt-in containment.
//
// # Use
//
// [New] builds an [Engine] from a [Config] (see [DefaultConfig]); feed it with
// [Engine.Process] (synchronous) or [Engine.Run] (a channel), receive alerts
// with [Engine.OnAlert], serve them with [Engine.Handler], persist them with
// [Engine.SetStore] and [Engine.Flush]. Custom rules come from YAML with
// [Engine.LoadRules]; [TestRules] runs a rules file over an events file.
// Sinks live in detect/sink, log ingestion in detect/ingest.
//
// # Time
//
// Every window (sliding counts, deduplication, incidents, hour-of-week
// baselines) runs on the events' own time, never on the wall clock, so a
// replay in simulated time sees what a live gateway would.
//
// # Memory
//
// No per-key state grows without bound. Per-source state lives in
// two-generation maps ([Config.MaxKeys] entries per dimension: once the young
// generation holds MaxKeys/2 keys the old one is dropped, so a key survives
// while it is used at least once per MaxKeys/2 new keys). Distinct subjects per
// source are counted exactly up to 8 and with a HyperLogLog sketch of 2^10
// registers (1 KiB, about 3% error) beyond, in two half-window buckets.
// Alerts (MaxAlerts), incidents (MaxIncidents), actions and per-rule group
// state are capped the same way. With the defaults the worst case, every
// tracked source heavy, is about 5 × 8192 × 2.3 KiB ≈ 95 MiB for enumeration
// plus a few MiB for the other detectors; typical use is far below.
package detect
