# 320_memory_stable.pl: the worker's private memory does not grow with the
# number of entries it processes (issue 4, test 9 and "Memory").
#
# 1 000 000 entries (flat encoding, from bench/loadgen, pipelined) are fed
# in 10 waves of 100 000, each wave drained (all rows committed, nothing
# pending; polled through processor.stats(), which is cheaper than
# count(*) on a growing table) before the next, and trimmed from the stream afterwards to keep
# Redis small.  After each wave the worker's RssAnon (from
# /proc/<pid>/status: anonymous private memory; total RSS would count the
# shared buffers it touched) is recorded.  At the end:
#
# - RssAnon after the last wave is within 10 MB of its value after the
#   first wave, and no wave's is more than 10 MB above it;
# - all 1 000 000 rows are there, each once; nothing pending; no dead
#   letters; the same worker pid throughout.
#
# processor.batch_size keeps its default (1000) and log_min_messages is
# 'warning' (no per-batch DEBUG1 lines).

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';
my $waves = 10;
my $per_wave = 100_000;
my $limit_kb = 10 * 1024;

my $loadgen = build_loadgen();

sub rss_anon_kb
{
	my ($pid) = @_;
	my $status = slurp_file("/proc/$pid/status");
	my ($kb) = $status =~ /^RssAnon:\s+(\d+) kB/m;
	die "no RssAnon in /proc/$pid/status" unless defined $kb;
	return $kb;
}

my $redis = RedisServer->new;
my $node = new_node(
	'memory',
	redis => $redis,
	log_min_messages => 'warning',
	'processor.block_time' => '100ms');

$node->safe_psql('postgres', 'CREATE EXTENSION processor');
ok( worker_running($node),
	'worker running');
my $pid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'processor'});
like($pid, qr/^\d+$/, "worker pid $pid");
note 'RssAnon before the first wave: ' . rss_anon_kb($pid) . ' kB';

my $t_start = time();
my @rss;
for my $w (0 .. $waves - 1)
{
	my $t0 = time();
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run(
		[
			$loadgen, '--quiet', '--port', $redis->port,
			'--count', $per_wave, '--devices', '1000', '--encoding', 'flat',
			'--no-attributes', '--seed', $w + 1,
			'--start-ts', 1767225600000 + $w * 1_000_000_000
		],
		'<', \undef, '>', \$out, '2>', \$err);
	my ($sent) = $out =~ /\bsent=(\d+)/;
	my ($rows) = $out =~ /\brows=(\d+)/;
	unless ($ok && defined $sent && $sent == $per_wave && $rows == $per_wave)
	{
		fail("wave $w: loadgen sent $per_wave rows");
		diag "loadgen: $out $err";
		last;
	}
	my $t1 = time();
	my $expected = ($w + 1) * $per_wave;
	my $drained = wait_for_rows($node,
		'SELECT inserted FROM processor.stats() WHERE worker = 1', $expected)
	  && poll_until(sub { pending_count($redis) == 0 });
	unless ($drained)
	{
		fail("wave $w drained");
		last;
	}
	$redis->cli('XTRIM', $stream, 'MAXLEN', '0');
	push @rss, rss_anon_kb($pid);
	note sprintf('wave %d: published in %.1f s, drained in %.1f s; RssAnon %d kB',
		$w + 1, $t1 - $t0, time() - $t1, $rss[-1]);
}
my $elapsed = time() - $t_start;
note sprintf('%d entries in %.1f s (%.0f/s end to end)',
	$waves * $per_wave, $elapsed, $waves * $per_wave / $elapsed);

is(scalar(@rss), $waves, "all $waves waves drained");
cmp_ok(abs($rss[-1] - $rss[0]), '<=', $limit_kb,
	"RssAnon after the last wave ($rss[-1] kB) within 10 MB of the first ($rss[0] kB)");
my ($max) = sort { $b <=> $a } @rss;
cmp_ok($max - $rss[0], '<=', $limit_kb,
	"RssAnon never grew more than 10 MB over the first wave's (max $max kB)");
is( $node->safe_psql(
		'postgres',
		'SELECT count(*) || \'/\' || count(DISTINCT stream_id) FROM public.positions'),
	($waves * $per_wave) . '/' . ($waves * $per_wave),
	'all 1 000 000 rows, each once');
is(pending_count($redis), 0, 'nothing pending');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'0', 'no dead letters');
is( $node->safe_psql(
		'postgres',
		'SELECT inserted, duplicates, dead_lettered FROM processor.stats()'),
	($waves * $per_wave) . '|0|0',
	'processor.stats(): 1 000 000 inserted, no duplicates');
is( $node->safe_psql(
		'postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'processor'}),
	$pid, 'the same worker throughout');

$node->stop;
$redis->stop;

done_testing();
