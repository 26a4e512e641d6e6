// Package detect turns the stream of access events, and the authority's
// issuances, into alerts: built-in detectors and custom CEL rules, alerts
// grouped into incidents, and opt-in containment.
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
// # What an attacker cannot multiply
//
// Per-source counts are beaten by spreading a crawl over residential proxies,
// ASNs and user agents, or by slowing each source down. id_coverage keys its
// state by the data read instead: blocks of the numeric member-ID space
// ([IDCoverageConfig.Block] IDs) and the distinct IDs of each read within
// [IDCoverageConfig.Window], by any source and whatever the verdict. A
// crawl in ID order covers its blocks whatever it does with its sources.
// The bar is the configured threshold or four times how widely blocks are
// read in a window (learnt from the blocks as their half-windows close, each
// sample capped at a quarter of the threshold, so the bar stays at most
// twice the threshold), whichever is higher. Its blind spots: a crawl in
// random ID order (each block then fills no faster than the crawl's share
// of the whole space), a crawl of existing IDs only where customers are
// dense and active enough to lift the bar, and a block whose customers are
// nearly all active within one window (say the newest block during a
// sign-up burst): raise the threshold where that happens.
//
// id_coverage also follows walks through each block by any source: a run
// of [EnumerationConfig.WalkRun] near-sequential IDs within the window,
// whoever reads them. A crawl in ID order alerts after WalkRun reads
// however slowly each of its sources goes, as long as the crawl as a whole
// reads WalkRun IDs of a block within the window (50 an hour by default).
// Every walk (per source, per block, per client) counts only within a time
// span from its first step: customers who share a key (a popular user
// agent, a busy block) read near-sequential IDs by chance, and without the
// span such chance runs would add up over weeks. For the same reason walks
// are followed per ASN and per user agent only where their enumeration
// threshold is set.
//
// foreign_spread keys its state by the country a request comes from:
// customer data of [ForeignSpreadConfig.Threshold] distinct subjects read
// from one country outside the allowed set within its window, with tokens
// that passed every check. Real customers' tokens replayed from abroad over
// hundreds of rented networks are one country's worth of state, and with
// containment block_country refuses that country at every gateway
// ([CountryBlocker]); an allowed country is never blocked, and a forged,
// missing or refused token never counts, so neither a forger nor an
// anonymous prober can turn it against the shop.
//
// The issuance side ([Engine.Issued]) is keyed by the client, which an
// attacker holding one stolen client secret cannot multiply: tokens issued
// with no login session (or one session for many people), subjects in
// sequence, a caller network outside the client's history, and a rate many
// times the client's own. With containment, suspend_client suspends the
// client's secret at the authority ([ClientSuspender]).
//
// # Time
//
// Every window (sliding counts, deduplication, incidents, hour-of-week
// baselines) runs on the events' own time, never on the wall clock, so a
// replay in simulated time sees what a live gateway would.
//
// # Speed
//
// [Engine.ProcessBatch] (and [Engine.Run], which batches what is queued)
// splits the per-key state between two shards by the top bit of each key's
// hash and runs them on two goroutines, each of which first prepares half of
// the batch (hashes, network, window indexes, computed once per event);
// alerts are then applied in event order, so the result equals feeding the
// events one by one to [Engine.Process]. Per-key state lives in hand-written
// two-generation tables (see genMap): a general-purpose map or cache would
// allocate per key, hold pointers the garbage collector scans, and could not
// drop idle keys wholesale. Values are stored densely in arrival order and
// hold no pointers (sketches are pooled per table and referred to by index).
// Rules whose expression stays within an error-free subset of CEL (field
// comparisons, &&, ||, !, ?:, in, size, startsWith, endsWith, contains,
// matches with a literal pattern) run as plain Go functions, reading fields
// at their offsets and checked first against a guard; the rest run in CEL.
// HyperLogLog sketches are hand-written (hll) for their estimate alone: the
// same figures as github.com/axiomhq/hyperloglog, from counts of registers
// per value instead of a power of two per register.
// See docs/bench/detect.md.
//
// # Restarts and detector processes
//
// The windows live in memory. A detector process that restarts rebuilds
// them by replaying, before it consumes, the access events of its
// partitions stored within [Engine.StateWindow] that it had acknowledged
// (natsbus Bus.Replay), inside [Engine.Replaying]: the alerts this raises
// again keep their ids and rows and reach no subscriber, stream or
// containment twice. Replay was chosen over persisting the state: the
// state is hand-made tables and sketches whose snapshots would have to be
// versioned and written continuously to be current at a SIGKILL, while the
// stream already holds, durably and in order, exactly the events that made
// it; the cost is reading the window's events at each start (see
// docs/SCALING.md). Route-volume baselines (weeks of history), open
// incidents and the containment rate limits are not rebuilt.
//
// A detector process holds no key, ledger or audit log: with
// [QueuedContainment] and [Engine.QueueAudit] its actions and alerts are
// rows of work queues in PostgreSQL ([WorkQueue]) that one authority
// claims, carries out and marks done.
//
// # Memory
//
// No per-key state grows without bound. Per-key state lives in
// two-generation tables ([Config.MaxKeys] live keys per dimension, split
// between the shards: once the young generation holds MaxKeys/4 keys in a
// shard the old one is dropped, so a key survives while it is used at least
// once per MaxKeys/4 new keys of its shard). A generation is an index of at
// most 2 × its keys' slots (12 bytes and 8 filter bits each) and an array
// of its values.
// Distinct subjects (or networks) per key are counted exactly up to 8, then
// with a HyperLogLog sketch of 2^10 registers (1,152 bytes with its counts
// per register value, see hll; 3% error), two
// per key (half-window buckets); only live keys hold sketches, and those of
// dropped keys are reused. With the defaults the worst case, every tracked
// key heavy, is about 114 MiB: 12 MiB of source values (216 bytes each),
// 38 MiB of sketches for addresses and networks, 19 MiB each for subjects
// and tokens, 3 MiB of subject and token values, 17 MiB of login sessions
// (once logins are fed), 2 MiB of routes; plus 0.5 MiB per threshold rule
// and 21 MiB if ip_rotation.per_fingerprint is set; id_coverage adds 19 MiB of
// sketches and 2 MiB of block values (walks included); foreign_spread at most 16 bytes per
// subject of its threshold per two-letter country code (676 × 20 × 16
// bytes, under 0.5 MiB with the defaults), and issuance detection
// keeps about 300 bytes per client (MaxKeys clients) and 20 bytes per login
// session (16 × MaxKeys sessions, 2.6 MiB). Alerts (MaxAlerts),
// incidents (MaxIncidents) and actions are capped the same way.
package detect
