# 300_two_clusters_one_group.pl: two PostgreSQL clusters consume one
# consumer group; when one dies holding entries, the other claims and
# stores them (issue 4, test 6; SPEC §4: consumer names, dead consumers,
# one transaction per batch).
#
# Nodes A and B point at the same Redis, stream and group, with
# processor.consumer_name 'a' and 'b' (consumers "a-1", "b-1"),
# claim_min_idle = 2s, claim_interval = 1s, batch_size = 500.
#
# Another session on A holds a SHARE lock on A's target, so A's worker
# reads a batch and waits; 5 000 entries are published in one MULTI/EXEC.
# Once XPENDING shows entries on "a-1", A is stopped with -m immediate
# (its batch never commits).  B then claims A's entries (XAUTOCLAIM, after
# claim_min_idle) and inserts them.  A is started again, paused
# (processor.enabled = off), to read its table.  Then:
#
# - every id A held when it died is in B's table; B counted claims;
# - the union of both tables' stream_ids is exactly the stream's ids;
# - the intersection holds at most one batch (500): only a batch committed
#   but not yet ACKed when A died can be in both;
# - each table holds each of its ids once; no dead letters; group
#   pending 0, nothing left on "a-1".

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';
my $total = 5000;
my $batch = 500;

# Pending ids of one consumer (extended XPENDING).
sub pending_of
{
	my ($redis, $consumer) = @_;
	my @l = split /\n/,
	  $redis->cli('XPENDING', $stream, 'processor', '-', '+', '100000', $consumer);
	my @ids;
	while (@l >= 4)
	{
		my ($id) = splice(@l, 0, 4);
		push @ids, $id;
	}
	return @ids;
}

sub ids_of
{
	my ($node) = @_;
	return grep { $_ ne '' } split /\n/,
	  $node->safe_psql('postgres', 'SELECT stream_id FROM public.positions');
}

my $redis = RedisServer->new;
my %common = (
	redis => $redis,
	'processor.claim_min_idle' => '2s',
	'processor.claim_interval' => '1s',
	'processor.batch_size' => $batch);
my $na = new_node('a', %common, 'processor.consumer_name' => 'a');
my $nb = new_node('b', %common, 'processor.consumer_name' => 'b');

foreach my $node ($na, $nb)
{
	$node->safe_psql('postgres', 'CREATE EXTENSION processor');
	ok( worker_running($node),
		$node->name . ': worker running');
}
is($na->safe_psql('postgres', 'SELECT consumer FROM processor.stats()'),
	'a-1', 'A consumes as a-1');
is($nb->safe_psql('postgres', 'SELECT consumer FROM processor.stats()'),
	'b-1', 'B consumes as b-1');
ok( $na->safe_psql('postgres', q{SELECT to_regclass('public.positions') IS NOT NULL}) eq 't',
	'A created its target');

# A warm-up entry: one of them stores it.
$redis->xadd($stream, device_id => 'warm', ts => '1767225600000', lat => '1', lon => '2');
ok( poll_until(
		sub {
			$na->safe_psql('postgres', 'SELECT count(*) FROM public.positions')
			  + $nb->safe_psql('postgres', 'SELECT count(*) FROM public.positions')
			  == 1;
		}),
	'the warm-up entry is stored by one of them');
ok(poll_until(sub { pending_count($redis) == 0 }), 'and acknowledged');

# --- A reads a batch and cannot commit it.

my $locker = $na->background_psql('postgres', on_error_stop => 0);
$locker->query_safe('BEGIN; LOCK TABLE public.positions IN SHARE MODE;');
note 'SHARE lock held on A\'s target';

my @cmds;
for my $i (1 .. $total)
{
	my $ts = 1767225600000 + $i;
	push @cmds,
	  ($i % 2)
	  ? [ 'XADD', $stream, '*', 'device_id', 'dev-' . ($i % 50), 'ts', $ts,
		'lat', '52.1', 'lon', '4.9' ]
	  : [ 'XADD', $stream, '*', 'payload',
		qq({"device_id":"dev-@{[ $i % 50 ]}","ts":$ts,"lat":52.1,"lon":4.9}) ];
}
$redis->pipeline(['MULTI'], @cmds, ['EXEC']);
is($redis->cli('XLEN', $stream), $total + 1, "$total entries published");

my @held;
ok( poll_until(
		sub {
			@held = pending_of($redis, 'a-1');
			@held > 0
			  && $na->safe_psql('postgres',
				q{SELECT wait_event_type FROM pg_stat_activity
				  WHERE backend_type = 'processor'}) eq 'Lock';
		}),
	'A has read a batch and waits on the lock');
note scalar(@held) . ' entries pending on a-1 when A is stopped';
cmp_ok(scalar(@held), '>', 0, 'entries pending on a-1');
cmp_ok(scalar(@held), '<=', $batch, 'at most one batch');

$na->stop('immediate');
note 'A stopped with -m immediate';

# --- B takes over.

ok( poll_until(
		sub {
			pending_count($redis) == 0 && scalar(pending_of($redis, 'a-1')) == 0;
		}),
	'B claimed A\'s entries: group pending 0, nothing left on a-1')
  or diag log_tail($nb, 30);

my %in_b = map { $_ => 1 } ids_of($nb);
my @missing = grep { !$in_b{$_} } @held;
is(scalar(@missing), 0, 'every entry A held is in B\'s table')
  or diag "missing from B: @missing[0 .. ($#missing < 9 ? $#missing : 9)]";
cmp_ok($nb->safe_psql('postgres', 'SELECT claimed FROM processor.stats()'),
	'>=', scalar(@held), 'B counted the claimed entries');
is($nb->safe_psql('postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'0', 'B: no dead letters');
is( $nb->safe_psql(
		'postgres',
		'SELECT count(*) = count(DISTINCT stream_id) FROM public.positions'),
	't', 'B stored each id once');

# --- A again, paused, to read what it had committed.

$na->append_conf('postgresql.conf', "processor.enabled = off\n");
$na->start;
my @ids_a = ids_of($na);
note scalar(@ids_a) . ' rows in A, ' . scalar(keys %in_b) . ' in B';
is( $na->safe_psql(
		'postgres',
		'SELECT count(*) = count(DISTINCT stream_id) FROM public.positions'),
	't', 'A stored each id once');
is($na->safe_psql('postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'0', 'A: no dead letters');

my %union = (%in_b, map { $_ => 1 } @ids_a);
my @both = grep { $in_b{$_} } @ids_a;
my @stream_ids = grep { /^\d+-\d+$/ } split /\n/,
  $redis->cli('XRANGE', $stream, '-', '+');
is(scalar(@stream_ids), $total + 1, 'XRANGE lists every id');
is(join(' ', sort keys %union), join(' ', sort @stream_ids),
	'the union of both tables holds every published entry, nothing else');
cmp_ok(scalar(@both), '<=', $batch,
	'at most one batch in both tables (' . scalar(@both) . ')');
is(pending_count($redis), 0, 'group pending 0');

eval { $locker->quit };
$na->stop;
$nb->stop;
$redis->stop;

done_testing();
