// Package replicatest holds the multi-process tests of a scale-out
// deployment: custos binaries built for the test, run as separate authority,
// gateway and detector processes on PostgreSQL, Redis, NATS JetStream and
// MariaDB, killed with SIGKILL and restarted while a script issues, revokes
// and attacks. It has no code outside its tests.
package replicatest
