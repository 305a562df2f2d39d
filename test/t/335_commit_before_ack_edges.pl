# 335_commit_before_ack_edges.pl: two edges of "never ACK before the commit
# is durable" (SPEC §4).
#
# - A batch that inserts nothing (a duplicate, while the plain insert is
#   paused) still commits with a transaction id of its own, so that its
#   commit record is flushed (and replicated) before the XACK: the next
#   transaction id moves on.
# - With a synchronous standby wanted (synchronous_standby_names names one
#   that never connects), the worker's commit waits.  PostgreSQL would stop
#   that wait on a query cancel or a SIGTERM with a WARNING and return as if
#   committed.  A cancel is ignored: the worker keeps waiting, the entry
#   stays pending.  After a SIGTERM the row is committed locally but the
#   entry is not acknowledged.  Once the standby is no longer wanted, the
#   restarted worker re-reads it from history as a duplicate, commits and
#   acknowledges it: one row, nothing pending.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';
my $redis = RedisServer->new;
my $node = new_node(
	'syncwait',
	redis => $redis,
	autovacuum => 'off',    # no other transaction takes an id
	wal_level => 'replica',
	max_wal_senders => 5);
$node->safe_psql('postgres',
	target_table_ddl() . '; CREATE EXTENSION processor');
ok( worker_running($node),
	'worker running');

sub publish
{
	my ($device, $ts) = @_;
	return $redis->xadd($stream, device_id => $device, ts => $ts,
		lat => '1', lon => '2');
}

sub next_xid
{
	return $node->safe_psql('postgres',
		'SELECT pg_snapshot_xmax(pg_current_snapshot())');
}

# --- A batch that inserts nothing takes a transaction id.

publish('d', '1000');
ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', '1'),
	'a position landed');
# The first duplicate fails the plain insert (which takes an id anyway)
# and pauses it; the second goes straight to ON CONFLICT DO NOTHING.
publish('d', '1000');
ok(poll_until(sub { worker_stat($node, 'duplicates') eq '1' }),
	'first duplicate counted');
ok(poll_until(sub { pending_count($redis) == 0 }), 'and acknowledged');
my $xid_before = next_xid();
publish('d', '1000');
ok(poll_until(sub { worker_stat($node, 'duplicates') eq '2' }),
	'second duplicate counted');
ok(poll_until(sub { pending_count($redis) == 0 }), 'and acknowledged');
cmp_ok(next_xid(), '>', $xid_before,
	'the batch that inserted nothing committed with a transaction id');

# --- A synchronous standby that never comes.

$node->safe_psql('postgres',
	q{ALTER SYSTEM SET synchronous_standby_names = 'ghost'; SELECT pg_reload_conf()});
my $pid = worker_stat($node, 'pid');
my $id = publish('s', '2000');
ok( $node->poll_query_until(
		'postgres',
		"SELECT wait_event FROM pg_stat_activity WHERE pid = $pid",
		'SyncRep'),
	'the worker commits and waits for the standby');

# A cancel must not end the wait.
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
sleep 1;
is( $node->safe_psql('postgres',
		"SELECT wait_event FROM pg_stat_activity WHERE pid = $pid"),
	'SyncRep', 'after a cancel the worker still waits for the standby');
is(pending_count($redis), 1, '... and the entry is still pending');

# A SIGTERM ends the wait, but nothing is acknowledged.
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE pid = $pid", '0'),
	'the worker exits on SIGTERM');
ok( $node->log_contains(
		qr/canceling the wait for synchronous replication and terminating connection/,
		$log_offset),
	'PostgreSQL cut the standby wait short');
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM public.positions WHERE device_id = 's'}),
	'1', 'the row is committed locally');
is(pending_count($redis), 1,
	'the entry is not acknowledged: its commit never reached the standby');

# No standby wanted any more: the entry comes back and is acknowledged.
$node->safe_psql('postgres',
	q{ALTER SYSTEM RESET synchronous_standby_names; SELECT pg_reload_conf()});
ok(poll_until(sub { pending_count($redis) == 0 }, timeout => 30),
	'after the standby is no longer wanted, the entry is acknowledged');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*), min(stream_id) FROM public.positions WHERE device_id = 's'}),
	"1|$id", 'stored once');

$node->stop;
$redis->stop;
done_testing();
