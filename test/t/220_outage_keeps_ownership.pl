# 220_outage_keeps_ownership.pl: a batch-level database error neither
# raises delivery counts nor lets another consumer take the batch (SPEC §4,
# batch-level database errors).
#
# The user pre-created public.positions partitioned by range of ts, with no
# partition at all: every row of the batch fails with the same SQLSTATE (no
# partition found), which is batch-level.  With processor.claim_min_idle =
# 1s and a fixed backoff of 3 s (retry_min = retry_max = 3s), for at least
# 3 x claim_min_idle:
#
# - the worker reports status "backoff" and a last_error naming the
#   partition, and counts db_retries;
# - it retries the same batch from memory: entries_read does not grow;
# - in XPENDING every entry of the batch stays on the worker's consumer,
#   delivery count 1, idle below claim_min_idle (XCLAIM ... JUSTID);
# - XAUTOCLAIM by another consumer ("thief", min-idle = claim_min_idle)
#   claims nothing.
# Both are sampled every ~20 ms on one Redis connection.
#
# Then CREATE TABLE ... PARTITION OF positions DEFAULT: the batch lands,
# nothing pending, no dead letters, db_retries > 0.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(time usleep);

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';
my $min_idle_ms = 1000;

# Extended XPENDING of the group: id => { consumer, idle, count }.
sub pending_entries
{
	my ($redis) = @_;
	my @l = split /\n/,
	  $redis->cli('XPENDING', $stream, 'processor', '-', '+', '1000');
	my %out;
	while (@l >= 4)
	{
		my ($id, $consumer, $idle, $count) = splice(@l, 0, 4);
		$out{$id} = { consumer => $consumer, idle => $idle, count => $count };
	}
	return \%out;
}

# A minimal RESP client on one connection: the watch loop below samples
# XPENDING often, and starting redis-cli for each sample is slow on a busy
# machine.  Returns the reply: a string, an integer, undef (nil), an array
# ref, or dies on an error reply.
sub resp
{
	my ($sock, @args) = @_;
	my $req = '*' . scalar(@args) . "\r\n";
	$req .= '$' . length($_) . "\r\n$_\r\n" foreach @args;
	print $sock $req or die "send: $!";
	return resp_read($sock);
}

sub resp_read
{
	my ($sock) = @_;
	my $line = <$sock>;
	die "connection closed" unless defined $line;
	$line =~ s/\r\n$//;
	my ($type, $rest) = (substr($line, 0, 1), substr($line, 1));
	return $rest if $type eq '+' || $type eq ':';
	die "error reply: $rest\n" if $type eq '-';
	if ($type eq '$')
	{
		return undef if $rest < 0;
		my $buf = '';
		while (length($buf) < $rest + 2)
		{
			my $n = read($sock, $buf, $rest + 2 - length($buf), length($buf));
			die "connection closed" unless $n;
		}
		return substr($buf, 0, $rest);
	}
	if ($type eq '*')
	{
		return undef if $rest < 0;
		return [ map { resp_read($sock) } 1 .. $rest ];
	}
	die "unexpected reply: $line";
}

sub stat_value
{
	my ($node, $column) = @_;
	return $node->safe_psql('postgres',
		"SELECT $column FROM processor.stats() WHERE worker = 1");
}

my $redis = RedisServer->new;
my $node = new_node(
	'outage',
	redis => $redis,
	'processor.claim_min_idle' => '1s',
	'processor.claim_interval' => '1s',
	'processor.retry_min' => '3s',
	'processor.retry_max' => '3s');

# The target as the user made it: the worker's columns, partitioned by ts,
# and no partition.
$node->safe_psql(
	'postgres', q{
CREATE TABLE public.positions (
  device_id   text             NOT NULL,
  ts          timestamptz      NOT NULL,
  lat         double precision NOT NULL,
  lon         double precision NOT NULL,
  altitude    double precision,
  speed       double precision,
  heading     double precision,
  satellites  integer,
  priority    integer,
  attributes  jsonb            NOT NULL DEFAULT '{}',
  stream_id   text,
  received_at timestamptz      NOT NULL DEFAULT now(),
  PRIMARY KEY (device_id, ts)
) PARTITION BY RANGE (ts)});

$node->safe_psql('postgres', 'CREATE EXTENSION processor');
ok( poll_until(
		sub {
			$node->safe_psql('postgres',
				q{SELECT status = 'running' AND redis_connected
				  FROM processor.stats() WHERE worker = 1}) eq 't';
		}),
	'worker running with the partitioned target (accepted as valid)');
my $consumer = stat_value($node, 'consumer');

# Three entries in one batch (MULTI/EXEC: one read takes them all).
my @cmds = (['MULTI']);
for my $i (1 .. 3)
{
	push @cmds,
	  [
		'XADD', $stream, '*', 'device_id', "dev-$i",
		'ts', 1767225600000 + $i, 'lat', '52.1', 'lon', '4.9'
	  ];
}
push @cmds, ['EXEC'];
$redis->pipeline(@cmds);
my @ids = grep { /^\d+-\d+$/ } split /\n/,
  $redis->cli('XRANGE', $stream, '-', '+');
is(scalar(@ids), 3, 'three entries published');

ok( poll_until(
		sub {
			$node->safe_psql('postgres',
				q{SELECT status = 'backoff' AND last_error LIKE '%partition%'
				  FROM processor.stats() WHERE worker = 1}) eq 't';
		}),
	'status backoff, last_error names the missing partition')
  or diag $node->safe_psql('postgres', 'SELECT * FROM processor.stats()');
note 'last_error: ' . stat_value($node, 'last_error');
my $read_at_start = stat_value($node, 'entries_read');
is($read_at_start, '3', 'the batch was read once');

# Watch for 3.5 x claim_min_idle, on one Redis connection.
my $sock = IO::Socket::INET->new(
	PeerAddr => $redis->host,
	PeerPort => $redis->port,
	Proto => 'tcp') or die "connect to Redis: $!";
my ($max_idle, $max_count, %consumers, $stolen, $samples) = (0, 0);
my $start = time();
while (time() - $start < 3.5 * $min_idle_ms / 1000)
{
	my %p = map { $_->[0] => { consumer => $_->[1], idle => $_->[2], count => $_->[3] } }
	  @{ resp($sock, 'XPENDING', $stream, 'processor', '-', '+', '100') };
	$samples++;
	foreach my $id (@ids)
	{
		my $e = $p{$id};
		if (!defined $e)
		{
			$consumers{'(not pending)'}++;
			next;
		}
		$consumers{ $e->{consumer} }++;
		$max_idle = $e->{idle} if $e->{idle} > $max_idle;
		$max_count = $e->{count} if $e->{count} > $max_count;
	}
	# Another consumer tries to take whatever is idle for claim_min_idle:
	# [cursor, [claimed ids], [deleted ids]]
	my $r = resp($sock, 'XAUTOCLAIM', $stream, 'processor', 'thief',
		$min_idle_ms, '0-0', 'JUSTID');
	$stolen .= join(' ', @{ $r->[1] });
	usleep(20_000);
}
close($sock);
note "$samples XPENDING samples, max idle $max_idle ms";

is_deeply(\%consumers, { $consumer => 3 * $samples },
	"every entry stayed pending on the worker's consumer ($consumer)");
is($max_count, 1, 'delivery counts stayed 1');
cmp_ok($max_idle, '<', $min_idle_ms,
	'idle time stayed below claim_min_idle (ownership kept with XCLAIM JUSTID)');
is($stolen // '', '', 'XAUTOCLAIM by another consumer claimed nothing');
is(stat_value($node, 'status'), 'backoff', 'still backing off');
is(stat_value($node, 'entries_read'), $read_at_start,
	'retried from memory: entries_read did not grow');
cmp_ok(stat_value($node, 'db_retries'), '>=', 1, 'db_retries counted');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'0', 'an outage makes no dead letters');

# --- The partition appears.

$node->safe_psql('postgres',
	'CREATE TABLE public.p_all PARTITION OF public.positions DEFAULT');

ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', '3'),
	'the batch landed once the partition exists');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(stream_id, ' ' ORDER BY stream_id) FROM public.p_all}),
	join(' ', sort @ids),
	'every entry in the new partition, with its stream id');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'0', 'no dead letters');
is(stat_value($node, 'entries_read'), '3', 'still read only once');
cmp_ok(stat_value($node, 'db_retries'), '>', 0, 'db_retries > 0');

$node->stop;
$redis->stop;

done_testing();
