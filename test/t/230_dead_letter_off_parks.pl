# 230_dead_letter_off_parks.pl: with processor.dead_letter = off, an invalid
# entry is logged and left pending, never acknowledged, never re-claimed by
# the worker itself and kept from other consumers (SPEC §4, invalid
# entries).
#
# An invalid entry (no ts) and a valid neighbour arrive in one batch, with
# processor.claim_min_idle = 1s and claim_interval = 1s:
#
# - the server log says "invalid entry <id> left pending: missing key: ts";
# - the neighbour lands; there is no dead letter;
# - for at least 3 x claim_min_idle, the invalid entry stays pending on the
#   worker's consumer with delivery count 1 (the worker does not claim or
#   re-read it) and idle below claim_min_idle (it keeps it fresh), and an
#   XAUTOCLAIM by another consumer claims nothing;
#
# then ALTER SYSTEM SET processor.dead_letter = on and a reload: the entry
# becomes a dead letter "missing key: ts" and nothing is pending.

use strict;
use warnings;

use IO::Socket::INET;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';
my $min_idle_ms = 1000;

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
	'parks',
	redis => $redis,
	'processor.dead_letter' => 'off',
	'processor.claim_min_idle' => '1s',
	'processor.claim_interval' => '1s');

$node->safe_psql('postgres', 'CREATE EXTENSION processor');
ok( poll_until(
		sub {
			$node->safe_psql('postgres',
				q{SELECT status = 'running' AND redis_connected
				  FROM processor.stats() WHERE worker = 1}) eq 't';
		}),
	'worker running');
my $consumer = stat_value($node, 'consumer');

# The invalid entry and its valid neighbour in one batch.
$redis->pipeline(
	['MULTI'],
	[ 'XADD', $stream, '*', 'device_id', 'bad', 'lat', '1', 'lon', '2' ],
	[
		'XADD', $stream, '*', 'device_id', 'good', 'ts', '1767225600000',
		'lat', '1', 'lon', '2'
	],
	['EXEC']);
my ($id_bad, $id_good) = grep { /^\d+-\d+$/ } split /\n/,
  $redis->cli('XRANGE', $stream, '-', '+');

ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', '1'),
	'the valid neighbour landed');
is($node->safe_psql('postgres', 'SELECT stream_id FROM public.positions'),
	$id_good, '... with its id');
ok( poll_until(
		sub {
			$node->log_contains(
				qr/invalid entry \Q$id_bad\E left pending: missing key: ts/);
		}),
	'logged: "invalid entry <id> left pending: missing key: ts"');

# Watch for 3.5 x claim_min_idle, on one Redis connection.
my $sock = IO::Socket::INET->new(
	PeerAddr => $redis->host,
	PeerPort => $redis->port,
	Proto => 'tcp') or die "connect to Redis: $!";
my ($max_idle, $max_count, %seen, $stolen, $samples) = (0, 0);
my $start = time();
while (time() - $start < 3.5 * $min_idle_ms / 1000)
{
	my @p = @{ resp($sock, 'XPENDING', $stream, 'processor', '-', '+', '100') };
	$samples++;
	$seen{ join(' ', map { "$_->[0]:$_->[1]" } @p) }++;
	foreach my $e (@p)
	{
		$max_idle = $e->[2] if $e->[2] > $max_idle;
		$max_count = $e->[3] if $e->[3] > $max_count;
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

is_deeply(\%seen, { "$id_bad:$consumer" => $samples },
	"only the invalid entry pending, always on the worker's consumer ($consumer)");
is($max_count, 1,
	'delivery count stayed 1: not re-read or re-claimed by the worker');
cmp_ok($max_idle, '<', $min_idle_ms,
	'idle time stayed below claim_min_idle (kept fresh)');
is($stolen // '', '', 'XAUTOCLAIM by another consumer claimed nothing');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'0', 'no dead letters');
is(stat_value($node, 'claimed'), '0', 'the worker claimed nothing');
is(pending_count($redis), 1, 'one entry pending');

# --- Dead letters on again.

$node->safe_psql('postgres',
	q{ALTER SYSTEM SET processor.dead_letter = on; SELECT pg_reload_conf()});

ok( wait_for_rows(
		$node, 'SELECT count(*) FROM public.positions_dead_letter', '1'),
	'after dead_letter = on, the parked entry is dead-lettered');
is( $node->safe_psql(
		'postgres',
		q{SELECT stream, stream_id, error, fields->>'device_id'
		  FROM public.positions_dead_letter}),
	"$stream|$id_bad|missing key: ts|bad",
	'dead letter: its id, "missing key: ts", its fields');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions'),
	'1', 'still one position');

$node->stop;
$redis->stop;

done_testing();
