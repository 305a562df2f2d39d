# 260_oversized_entry.pl: a Redis reply larger than
# processor.max_reply_bytes drops the connection, the worker halves its
# COUNT down to 1 and retries, and a single entry still too large is
# dead-lettered by id, without its fields (SPEC §4, oversized replies).
#
# processor.max_reply_bytes = 1MB, processor.max_entry_bytes = 8MB (so the
# big entry would be a valid position if it could be read: only the reply
# limit stops it), processor.batch_size = 10.  Published before CREATE
# EXTENSION, in this order: a valid entry, a valid flat entry with an extra
# ~2 MB field (unknown keys are ignored), a valid entry.
#
# - the log says the reply was larger than processor.max_reply_bytes;
# - the big entry is a dead letter with its id, the error "entry larger
#   than processor.max_reply_bytes (1048576 bytes)" and fields NULL, and is
#   not in the table;
# - both valid entries land; nothing is pending;
# - the worker's anonymous memory stays modest.
#
# Then a 24 MB entry and a valid one, published while the worker runs: the
# same dead letter, the valid one lands, and the worker's peak RSS (VmHWM)
# grew by far less than 24 MB: it never buffered the reply beyond the
# limit.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';
my $big_bytes = 2 * 1024 * 1024;
my $huge_bytes = 24 * 1024 * 1024;

# A field of /proc/<pid>/status in kB.
sub proc_kb
{
	my ($pid, $field) = @_;
	my $status = slurp_file("/proc/$pid/status");
	return $status =~ /^\Q$field\E:\s+(\d+) kB/m ? $1 : undef;
}

my $redis = RedisServer->new;
my $node = new_node(
	'oversized',
	redis => $redis,
	'processor.max_reply_bytes' => '1MB',
	'processor.max_entry_bytes' => '8MB',
	'processor.batch_size' => 10);

is($node->safe_psql('postgres', 'SHOW processor.max_reply_bytes'),
	'1MB', 'max_reply_bytes = 1MB');

# One connection, in order: small, big, small (explicit ids).
my ($id_s1, $id_big, $id_s2) = ('1767225600001-0', '1767225600002-0',
	'1767225600003-0');
$redis->pipeline(
	[
		'XADD', $stream, $id_s1, 'device_id', 'small-1',
		'ts', '1767225600001', 'lat', '1', 'lon', '2'
	],
	[
		'XADD', $stream, $id_big, 'device_id', 'big',
		'ts', '1767225600002', 'lat', '1', 'lon', '2',
		'blob', 'x' x $big_bytes
	],
	[
		'XADD', $stream, $id_s2, 'device_id', 'small-2',
		'ts', '1767225600003', 'lat', '1', 'lon', '2'
	]);
is($redis->cli('XLEN', $stream), '3', 'three entries published');
cmp_ok(length($redis->cli('XRANGE', $stream, $id_big, $id_big)), '>', $big_bytes,
	'the big entry holds its ~2 MB field');

my $worker_pid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'processor'});
like($worker_pid, qr/^\d+$/, "worker pid $worker_pid");
my $anon_before = proc_kb($worker_pid, 'RssAnon');

$node->safe_psql('postgres', 'CREATE EXTENSION processor');

ok( wait_for_rows(
		$node, 'SELECT count(*) FROM public.positions_dead_letter', '1'),
	'one dead letter');
ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', '2'),
	'both valid entries landed');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');

is( $node->safe_psql(
		'postgres',
		q{SELECT stream, stream_id, error, fields IS NULL
		  FROM public.positions_dead_letter}),
	"$stream|$id_big|entry larger than processor.max_reply_bytes (1048576 bytes)|t",
	'dead letter by id: "entry larger than processor.max_reply_bytes (1048576 bytes)", fields NULL'
);
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(device_id || ' ' || stream_id, ',' ORDER BY device_id)
		  FROM public.positions}),
	"small-1 $id_s1,small-2 $id_s2",
	'the valid entries stored; the big one not');
ok( $node->log_contains(
		qr/reply larger than processor\.max_reply_bytes \(1048576 bytes\)/),
	'logged: reply larger than processor.max_reply_bytes');

# Memory: the same worker, its anonymous memory grew by less than the big
# entry would take twice, its total RSS (which counts the shared buffers it
# touched) stays modest.
is( $node->safe_psql(
		'postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'processor'}),
	$worker_pid,
	'the same worker did it all (no crash, no restart)');
my $anon_after = proc_kb($worker_pid, 'RssAnon');
my $rss = proc_kb($worker_pid, 'VmRSS');
note "worker RssAnon $anon_before kB before, $anon_after kB after; VmRSS $rss kB";
cmp_ok($anon_after - $anon_before, '<', 2 * $big_bytes / 1024,
	'RssAnon grew by less than twice the big entry');
cmp_ok($rss, '<', 64 * 1024, 'VmRSS below 64 MB');

# --- A 24 MB entry: the reply is cut at the limit, never buffered whole.

my $hwm_before = proc_kb($worker_pid, 'VmHWM');
my ($id_huge, $id_s3) = ('1767225600004-0', '1767225600005-0');
$redis->pipeline(
	[
		'XADD', $stream, $id_huge, 'device_id', 'huge',
		'ts', '1767225600004', 'lat', '1', 'lon', '2',
		'blob', 'y' x $huge_bytes
	],
	[
		'XADD', $stream, $id_s3, 'device_id', 'small-3',
		'ts', '1767225600005', 'lat', '1', 'lon', '2'
	]);
ok( wait_for_rows(
		$node, 'SELECT count(*) FROM public.positions_dead_letter', '2'),
	'the 24 MB entry dead-lettered');
ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', '3'),
	'the valid entry after it landed');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');
is( $node->safe_psql(
		'postgres',
		qq{SELECT error, fields IS NULL FROM public.positions_dead_letter
		   WHERE stream_id = '$id_huge'}),
	'entry larger than processor.max_reply_bytes (1048576 bytes)|t',
	'dead letter by id, fields NULL');
my $hwm_after = proc_kb($worker_pid, 'VmHWM');
note "worker VmHWM $hwm_before kB before the 24 MB entry, $hwm_after kB after";
cmp_ok($hwm_after - $hwm_before, '<', 8 * 1024,
	'peak RSS grew by less than 8 MB: the 24 MB reply was never buffered');

$node->stop;
$redis->stop;

done_testing();
