
# 160_oversized_reply.pl: a Redis reply larger than processor.max_reply_bytes
# drops the connection instead of being buffered (SPEC §4 "Oversized
# replies", §7; issue 6).
#
# A fake Redis on loopback, written here in Perl, speaks enough RESP for the
# worker's handshake and bookkeeping (PING, AUTH, SELECT, XGROUP, XINFO,
# XPENDING, XAUTOCLAIM, XCLAIM, XACK; this consumer has nothing pending, so
# a history read gets no entries) and answers every XREADGROUP for new
# entries (">") with a reply whose one field value announces 2 GB
# ($2147483648), then streams bytes of it for as long as the worker reads
# (up to 320 MB), then holds the connection open.  With
# processor.max_reply_bytes = 1MB:
# - the worker drops the connection, and the log says the reply was over
#   the limit;
# - it retries (more XREADGROUPs on new connections, redis_reconnects
#   grows), with backoff (no busy loop), and with a smaller COUNT than
#   before (SPEC §4: COUNT halves after a reply that is too large);
# - nothing is acknowledged (no XACK reaches the server);
# - the worker's peak resident memory (VmHWM) stays far below what was
#   offered: under 200 MB;
# - the worker process stays the same and the server never crashes.
# (b) Against a real Redis, a single entry larger than the limit, between
#     two valid ones, is dead-lettered by id without its fields (SPEC §4),
#     and the valid ones land.

use strict;
use warnings;

use IO::Socket::INET;
use POSIX qw(WNOHANG);
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';
my $offered = 320 * 1024 * 1024;    # bytes streamed per XREADGROUP at most
my $rss_limit_kb = 200 * 1024;

# ---------------------------------------------------------------------
# The fake Redis: one forked process accepting connections, one forked
# child per connection.  Every command is appended to $cmdlog as
# "<connection pid> <COMMAND> <args...>" (arguments cut to 40 bytes).
# ---------------------------------------------------------------------

my $cmdlog = "$PostgreSQL::Test::Utils::log_path/160_fake_redis_commands.log";
unlink $cmdlog;

# Read one RESP command (an array of bulk strings) from $sock, using $$buf
# as the read buffer.  Returns an array ref, or undef at EOF.
sub read_command
{
	my ($sock, $buf) = @_;
	my $need = sub {
		my ($n) = @_;
		while (length($$buf) < $n)
		{
			my $r = sysread($sock, $$buf, 65536, length($$buf));
			return 0 unless $r;
		}
		return 1;
	};
	my $line = sub {
		while ((my $i = index($$buf, "\r\n")) < 0)
		{
			my $r = sysread($sock, $$buf, 65536, length($$buf));
			return undef unless $r;
		}
		my $i = index($$buf, "\r\n");
		my $l = substr($$buf, 0, $i);
		substr($$buf, 0, $i + 2) = '';
		return $l;
	};
	my $head = $line->() // return undef;
	die "fake redis: expected an array, got \"$head\"\n" unless $head =~ /^\*(\d+)$/;
	my @args;
	for (1 .. $1)
	{
		my $len = $line->() // return undef;
		die "fake redis: expected a bulk string\n" unless $len =~ /^\$(\d+)$/;
		$need->($1 + 2) or return undef;
		push @args, substr($$buf, 0, $1);
		substr($$buf, 0, $1 + 2) = '';
	}
	return \@args;
}

# Write all of $data; false when the peer is gone.
sub write_all
{
	my ($sock, $data) = @_;
	while (length $data)
	{
		my $w = syswrite($sock, $data);
		return 0 unless $w;
		substr($data, 0, $w) = '';
	}
	return 1;
}

# The oversized XREADGROUP reply: one stream, one entry "1-1" whose value
# announces 2 GB; then up to $offered bytes of it; then hold until EOF.
sub oversized_reply
{
	my ($sock) = @_;
	my $header =
	    "*1\r\n*2\r\n\$" . length($stream) . "\r\n$stream\r\n"
	  . "*1\r\n*2\r\n\$3\r\n1-1\r\n*2\r\n\$9\r\ndevice_id\r\n"
	  . "\$2147483648\r\n";
	return unless write_all($sock, $header);
	my $chunk = 'x' x 65536;
	for (my $sent = 0; $sent < $offered; $sent += length $chunk)
	{
		return unless write_all($sock, $chunk);
	}
	# hold the connection: wait for the client to close it (at most 60 s)
	my $rin = '';
	vec($rin, fileno($sock), 1) = 1;
	my $junk;
	for (1 .. 60)
	{
		my $rout = $rin;
		next unless select($rout, undef, undef, 1);
		return unless sysread($sock, $junk, 65536);
	}
	return;
}

sub serve_connection
{
	my ($sock) = @_;
	my $buf = '';
	open my $log, '>>', $cmdlog or die "open $cmdlog: $!";
	$log->autoflush(1);
	while (my $cmd = read_command($sock, \$buf))
	{
		my $name = uc($cmd->[0] // '');
		my $sub = uc($cmd->[1] // '');
		print $log "$$ " . join(' ', map { substr($_, 0, 40) } @$cmd) . "\n";

		my $reply;
		if    ($name eq 'PING') { $reply = "+PONG\r\n"; }
		elsif ($name eq 'AUTH' || $name eq 'SELECT' || $name eq 'XGROUP')
		{
			$reply = "+OK\r\n";
		}
		elsif ($name eq 'XINFO') { $reply = "*0\r\n"; }
		elsif ($name eq 'XPENDING')
		{
			# summary form: nothing pending; extended form: no entries
			$reply = @$cmd == 3 ? "*4\r\n:0\r\n\$-1\r\n\$-1\r\n*-1\r\n" : "*0\r\n";
		}
		elsif ($name eq 'XAUTOCLAIM') { $reply = "*3\r\n\$3\r\n0-0\r\n*0\r\n*0\r\n"; }
		elsif ($name eq 'XCLAIM')     { $reply = "*0\r\n"; }
		elsif ($name eq 'XACK')       { $reply = ":0\r\n"; }
		elsif ($name eq 'XREADGROUP' && $cmd->[-1] ne '>')
		{
			# this consumer's history: nothing pending
			$reply = "*1\r\n*2\r\n\$" . length($stream) . "\r\n$stream\r\n*0\r\n";
		}
		elsif ($name eq 'XREADGROUP')
		{
			oversized_reply($sock);
			last;
		}
		else { $reply = "-ERR unknown command '$cmd->[0]'\r\n"; }
		last unless write_all($sock, $reply);
	}
	close $sock;
	return;
}

# Start the fake server; returns (pid, port).
sub start_fake_redis
{
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $listen = IO::Socket::INET->new(
		LocalAddr => '127.0.0.1',
		LocalPort => $port,
		Proto => 'tcp',
		Listen => 16,
		ReuseAddr => 1) or die "fake redis: listen on $port: $!";
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		my %kids;
		$SIG{PIPE} = 'IGNORE';
		$SIG{TERM} = sub { kill 'KILL', keys %kids; POSIX::_exit(0); };
		while (1)
		{
			while ((my $k = waitpid(-1, WNOHANG)) > 0) { delete $kids{$k}; }
			my $conn = $listen->accept or next;
			my $kid = fork();
			if (defined $kid && $kid == 0)
			{
				$SIG{TERM} = 'DEFAULT';
				close $listen;
				eval { serve_connection($conn); };
				POSIX::_exit(0);
			}
			$kids{$kid} = 1 if defined $kid;
			close $conn;
		}
	}
	close $listen;
	note "fake redis pid $pid on 127.0.0.1:$port";
	return ($pid, $port);
}

my ($fake_pid, $fake_port) = start_fake_redis();

sub stop_fake_redis
{
	return unless defined $fake_pid;
	kill 'TERM', $fake_pid;
	waitpid($fake_pid, 0);
	$fake_pid = undef;
	return;
}

END
{
	my $exit_code = $?;
	stop_fake_redis();
	$? = $exit_code;
}

# The commands the fake server received: list of [pid, name, args...].
sub commands
{
	return () unless -f $cmdlog;
	return map { [ split / / ] } split /\n/, slurp_file($cmdlog);
}

# ---------------------------------------------------------------------

my $node = new_node(
	'oversized',
	'processor.redis_port' => $fake_port,
	'processor.max_reply_bytes' => '1MB',
	'processor.batch_size' => 1000);
$node->safe_psql('postgres', 'CREATE EXTENSION processor');

my $pid;
ok( poll_until(
		sub {
			$pid = $node->safe_psql('postgres',
				q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'processor'});
			return $pid =~ /^\d+$/;
		}),
	'worker running');

my $limit_re = qr/reply from Redis larger than 1048576 bytes|reply too large|max_reply_bytes/;
ok(poll_until(sub { $node->log_contains($limit_re) }, timeout => 20),
	'the log says the reply exceeded the limit');

my $t0 = time();
ok( poll_until(
		sub {
			my %conns = map { $_->[0] => 1 }
			  grep { $_->[1] eq 'XREADGROUP' && $_->[-1] eq '>' } commands();
			return keys(%conns) >= 3;
		},
		timeout => 20),
	'the worker keeps retrying: XREADGROUP ">" on 3 connections');
usleep(2_000_000);    # a few more backoff steps
my $elapsed = time() - $t0;

my @cmds = commands();
my @reads = grep { $_->[1] eq 'XREADGROUP' && $_->[-1] eq '>' } @cmds;
my %read_conns = map { $_->[0] => 1 } @reads;
my @counts = map {
	my @a = @$_;
	my ($i) = grep { uc($a[$_]) eq 'COUNT' } 0 .. $#a;
	defined $i ? $a[ $i + 1 ] : 'none';
} @reads;
note sprintf('%d XREADGROUPs on %d connections; COUNTs: %s',
	scalar(@reads), scalar(keys %read_conns), join(' ', @counts));

is(scalar(grep { $_->[1] eq 'XACK' } @cmds), 0, 'nothing was acknowledged (no XACK)');
cmp_ok(scalar(@reads), '<=', 40,
	sprintf('retries back off (%d reads in about %.0f s, no busy loop)',
		scalar(@reads), $elapsed + 1));
is("@counts[0 .. 2]", '1000 500 250',
	'each retry asks for half as many entries (COUNT halves, SPEC §4)');

my $stats = $node->safe_psql('postgres',
	'SELECT redis_reconnects, entries_read, last_error FROM processor.stats()');
my ($reconnects, $read, $last_error) = split /\|/, $stats, 3;
cmp_ok($reconnects, '>=', 2, 'processor.stats() counts the reconnects');
is($read, '0', 'no entry was read');
like($last_error, $limit_re, 'last_error names the reply size limit');

# Peak resident memory of the worker, from /proc.
my ($hwm) = slurp_file("/proc/$pid/status") =~ /^VmHWM:\s+(\d+) kB/m;
note "worker VmHWM: $hwm kB";
cmp_ok($hwm, '<', $rss_limit_kb,
	'the worker\'s peak RSS stays far below the 2 GB announced');

is( $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'processor'}),
	$pid, 'same worker pid throughout');
my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal/, 'the server never crashed');

stop_fake_redis();

# ---------------------------------------------------------------------
# (b) The same limit against a real Redis: a single entry larger than
# processor.max_reply_bytes, published between two valid ones, is
# dead-lettered by id without its fields; the others land; nothing stays
# pending.
# ---------------------------------------------------------------------

my $redis = RedisServer->new;
$redis->pipeline(
	[ 'XADD', $stream, '1-1', device_id => 'before', ts => '1000', lat => '1', lon => '2' ],
	[ 'XADD', $stream, '1-2', device_id => 'huge', ts => '2000', lat => '1', lon => '2',
		blob => 'x' x (2 * 1024 * 1024) ],
	[ 'XADD', $stream, '1-3', device_id => 'after', ts => '3000', lat => '1', lon => '2' ]);
$node->safe_psql('postgres',
	'ALTER SYSTEM SET processor.redis_port = ' . $redis->port);
$node->reload;

ok( wait_for_rows(
		$node,
		q{SELECT string_agg(device_id, ',' ORDER BY ts) FROM public.positions},
		'before,after'),
	'(b) real Redis: the entries around the oversized one land');
is( $node->safe_psql(
		'postgres',
		q{SELECT stream_id, fields IS NULL, error LIKE '%max_reply_bytes%'
		    FROM public.positions_dead_letter}),
	'1-2|t|t',
	'(b) the oversized entry is dead-lettered by id, without its fields');
ok(poll_until(sub { pending_count($redis) == 0 }), '(b) nothing pending');
($hwm) = slurp_file("/proc/$pid/status") =~ /^VmHWM:\s+(\d+) kB/m;
cmp_ok($hwm, '<', $rss_limit_kb, "(b) peak RSS still small ($hwm kB)");
is( $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'processor'}),
	$pid, '(b) same worker pid');

$node->stop;
$redis->stop;

done_testing();
