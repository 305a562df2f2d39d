=pod

=head1 NAME

ProcessorTest - PostgreSQL nodes that run the processor worker, for TAP tests

=head1 SYNOPSIS

  use PostgreSQL::Test::Utils;
  use Test::More;
  use RedisServer;
  use ProcessorTest;

  my $redis = RedisServer->new;
  my $node  = new_node('main', redis => $redis,
                       'processor.batch_size' => 10);
  $node->safe_psql('postgres', 'CREATE EXTENSION processor');
  $redis->xadd('telemetry:t', device_id => 'd1', ts => '1000',
               lat => '1', lon => '2');
  ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', '1'),
     'position stored');
  ok(poll_until(sub { pending_count($redis) == 0 }), 'entry acked');

=head1 DESCRIPTION

Test scripts live in F<test/t/NNN_behaviour.pl> and find this module and
RedisServer through C<prove -I test> (F<Makefile>, target C<tapcheck>).

=cut

package ProcessorTest;

use strict;
use warnings;

use Carp;
use Exporter 'import';
use IO::Socket::INET;
use IPC::Run;
use Time::HiRes qw(usleep);

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(new_node wait_for_rows poll_until worker_running pending_count log_tail
  count_log max_failures
  stream_groups pending_entries worker_stat target_table_ddl
  dead_letter_table_ddl sample_pending build_loadgen);

=pod

=head1 FUNCTIONS

=over

=item new_node($name, %opts)

Create (initdb: UTF8, C locale) and start a PostgreSQL::Test::Cluster node
that preloads processor.  C<redis =E<gt> $redis> (a RedisServer) points the
worker at that server; without it, the worker is pointed at port 1, where
nothing listens.  C<start =E<gt> 0> leaves the node stopped.  Every other
key is a GUC, written with its full name (C<'processor.batch_size' =E<gt>
10>, C<log_min_messages =E<gt> 'debug2'>); values are quoted for
postgresql.conf.  These override the defaults for tests:

  shared_preload_libraries          processor
  log_min_messages                  debug1 (the per-batch lines)
  processor.redis_host              127.0.0.1
  processor.block_time              100ms
  processor.redis_connect_timeout   1s
  processor.redis_timeout           5s
  processor.retry_min               50ms
  processor.retry_max               1s
  processor.claim_interval          1s

claim_min_idle keeps its default (60 s): tests of dead consumers set it.

=cut

sub new_node
{
	my ($name, %opts) = @_;
	my $redis = delete $opts{redis};
	my $start = exists $opts{start} ? delete $opts{start} : 1;

	my %gucs = (
		shared_preload_libraries => 'processor',
		log_min_messages => 'debug1',
		'processor.redis_host' => '127.0.0.1',
		'processor.redis_port' => $redis ? $redis->port : 1,
		'processor.block_time' => '100ms',
		'processor.redis_connect_timeout' => '1s',
		'processor.redis_timeout' => '5s',
		'processor.retry_min' => '50ms',
		'processor.retry_max' => '1s',
		'processor.claim_interval' => '1s',
		%opts);

	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
	$node->append_conf('postgresql.conf',
		join('', map { "$_ = " . _quote($gucs{$_}) . "\n" } sort keys %gucs));
	$node->start if $start;
	return $node;
}

# A postgresql.conf string literal.
sub _quote
{
	my ($value) = @_;
	$value =~ s/'/''/g;
	return "'$value'";
}

=pod

=item wait_for_rows($node, $sql, $expected [, dbname =E<gt> 'postgres'])

Poll $sql (one value, or rows as psql -At prints them) until it returns
$expected, up to the TAP timeout (PG_TEST_TIMEOUT_DEFAULT, 30 s under
C<make test>; poll_query_until makes 10 tries per second of it, so a wait
in vain lasts about twice that).  A query that fails, e.g. because the
worker has not created the table yet, just polls again.  Returns true on success; on timeout it
also prints the worker's stats and the tail of the server log.

=cut

sub wait_for_rows
{
	my ($node, $sql, $expected, %opts) = @_;
	my $dbname = $opts{dbname} // 'postgres';

	return 1 if $node->poll_query_until($dbname, $sql, $expected);

	my ($stdout, $stderr) = ('', '');
	$node->psql($dbname, 'SELECT * FROM processor.worker_stats',
		stdout => \$stdout, stderr => \$stderr, extra_params => ['-x']);
	diag "processor.worker_stats:\n$stdout$stderr";
	diag "tail of " . $node->logfile
	  . " (without this test's statements):\n"
	  . log_tail($node, 40);
	return 0;
}

=pod

=item poll_until($code [, timeout =E<gt> seconds])

Call $code every 50 ms until it returns true (default timeout: the TAP
timeout).  Dies inside $code (e.g. Redis down) count as false.  Returns
true on success.

=cut

sub poll_until
{
	my ($code, %opts) = @_;
	my $deadline =
	  time() + ($opts{timeout} // $PostgreSQL::Test::Utils::timeout_default);

	while (1)
	{
		my $ok = eval { $code->() };
		return 1 if $ok;
		return 0 if time() > $deadline;
		usleep(50_000);
	}
}

=pod

=item pending_count($redis [, $stream, $group])

The group's pending count (XPENDING summary), default stream
C<telemetry:t> and group C<processor>.  Dies if there is no such group.

=cut

sub pending_count
{
	my ($redis, $stream, $group) = @_;
	my $out = $redis->cli('XPENDING', $stream // 'telemetry:t',
		$group // 'processor');
	my ($count) = split /\n/, $out;
	croak "XPENDING: $out" unless defined $count && $count =~ /^\d+$/;
	return $count;
}

=pod

=item log_tail($node [, $lines])

The last $lines (default 40) lines of the node's server log, leaving out the
lines of the test script's own sessions (their application_name is the
script's name), which polling would otherwise fill it with.

=cut

sub log_tail
{
	my ($node, $lines) = @_;
	my $appname = " $ENV{PGAPPNAME} ";
	$lines //= 40;
	my @all =
	  grep { index($_, $appname) < 0 } split /\n/, slurp_file($node->logfile);
	splice(@all, 0, @all - $lines) if @all > $lines;
	return join("\n", @all) . "\n";
}

=pod

=item stream_groups($redis, $stream)

The consumer groups of a stream (XINFO GROUPS): a hash ref, group name =>
{ field => value }; empty when the stream does not exist.

=cut

sub stream_groups
{
	my ($redis, $key) = @_;
	my @lines = split /\n/, $redis->cli('XINFO', 'GROUPS', $key), -1;
	my (%groups, $cur);
	while (@lines >= 2)
	{
		my ($k, $v) = splice(@lines, 0, 2);
		$cur = $groups{$v} = {} if $k eq 'name';
		$cur->{$k} = $v if $cur;
	}
	return \%groups;
}

=pod

=item pending_entries($redis [, $stream, $group])

The group's extended XPENDING (up to 1000 entries), default stream
C<telemetry:t> and group C<processor>: a hash ref, id =E<gt> { id,
consumer, idle, count }.

=cut

sub pending_entries
{
	my ($redis, $stream, $group) = @_;
	my @l = split /\n/,
	  $redis->cli('XPENDING', $stream // 'telemetry:t', $group // 'processor',
		'-', '+', '1000');
	my %out;
	while (@l >= 4)
	{
		my ($id, $consumer, $idle, $count) = splice(@l, 0, 4);
		$out{$id} =
		  { id => $id, consumer => $consumer, idle => $idle, count => $count };
	}
	return \%out;
}

=pod

=item count_log($node, $re [, $offset])

How many lines of the server log, from byte $offset on, match $re.

=cut

sub count_log
{
	my ($node, $re, $offset) = @_;
	my @hits = grep { /$re/ } split /\n/,
	  PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset // 0);
	return scalar @hits;
}

=pod

=item max_failures($seconds)

The most failures a worker can log in $seconds when each is followed by
the next backoff delay (processor.retry_min 50ms doubling up to
processor.retry_max 1s, as new_node sets them), plus one for slack.

=cut

sub max_failures
{
	my ($seconds) = @_;
	my ($n, $elapsed, $delay) = (1, 0, 0.05);
	while ($elapsed + $delay <= $seconds)
	{
		$elapsed += $delay;
		$n++;
		$delay = $delay * 2 > 1 ? 1 : $delay * 2;
	}
	return $n + 1;
}

=pod

=item worker_stat($node, $expr)

$expr (a column of processor.stats(), or an expression over its columns)
for worker 1, as psql prints it.

=cut

sub worker_stat
{
	my ($node, $expr) = @_;
	return $node->safe_psql('postgres',
		"SELECT $expr FROM processor.stats() WHERE worker = 1");
}

=pod

=item worker_running($node)

Wait (poll_until) until worker 1 is running and connected to Redis: true
when it is, false at the timeout.

=cut

sub worker_running
{
	my ($node) = @_;
	return poll_until(
		sub {
			worker_stat($node, q{status = 'running' AND redis_connected}) eq
			  't';
		});
}

=pod

=item target_table_ddl(%opts)

A CREATE TABLE statement (no trailing semicolon) for a target table with
exactly the columns the worker creates (F<src/tables.c>, C<target_ddl>), as
a user would pre-create it.  Options:

  name          table name, default public.positions
  primary_key   0 leaves out PRIMARY KEY (device_id, ts) (default 1)
  extra         more table elements (a string, or an array ref of them),
                e.g. 'CONSTRAINT c CHECK (lat <> 13)'
  partition_by  e.g. 'RANGE (ts)': appends PARTITION BY ...
  types         { column => 'definition' }: replaces a column's type and
                constraints, e.g. { lat => 'point' }

=cut

my @target_columns = (
	[ device_id => 'text             NOT NULL' ],
	[ ts => 'timestamptz      NOT NULL' ],
	[ lat => 'double precision NOT NULL' ],
	[ lon => 'double precision NOT NULL' ],
	[ altitude => 'double precision' ],
	[ speed => 'double precision' ],
	[ heading => 'double precision' ],
	[ satellites => 'integer' ],
	[ priority => 'integer' ],
	[ attributes => q{jsonb            NOT NULL DEFAULT '{}'} ],
	[ stream_id => 'text' ],
	[ received_at => 'timestamptz      NOT NULL DEFAULT now()' ]);

sub target_table_ddl
{
	my (%opts) = @_;
	my $name = $opts{name} // 'public.positions';
	my $types = $opts{types} // {};
	my @elems = map {
		sprintf('%-11s %s', $_->[0], $types->{ $_->[0] } // $_->[1])
	} @target_columns;
	push @elems, 'PRIMARY KEY (device_id, ts)'
	  if $opts{primary_key} // 1;
	my $extra = $opts{extra};
	push @elems, ref $extra ? @$extra : $extra if defined $extra;
	my $ddl = "CREATE TABLE $name (\n\t" . join(",\n\t", @elems) . ")";
	$ddl .= " PARTITION BY $opts{partition_by}" if defined $opts{partition_by};
	return $ddl;
}

=pod

=item dead_letter_table_ddl(%opts)

A CREATE TABLE statement (no trailing semicolon) for a dead letter table
with exactly the worker's columns (F<src/tables.c>, C<dead_letter_ddl>).
C<name>, default public.positions_dead_letter.

=cut

sub dead_letter_table_ddl
{
	my (%opts) = @_;
	my $name = $opts{name} // 'public.positions_dead_letter';
	return "CREATE TABLE $name (
	stream      text        NOT NULL,
	stream_id   text        NOT NULL,
	fields      jsonb,
	error       text        NOT NULL,
	deliveries  integer,
	failed_at   timestamptz NOT NULL DEFAULT now(),
	UNIQUE (stream, stream_id))";
}

=pod

=item sample_pending($redis, seconds =E<gt> $s, %opts)

Sample the group's extended XPENDING (up to 100 entries) every ~20 ms for
$s seconds on one Redis connection (a minimal RESP client: starting
redis-cli for each sample is too slow on a busy machine).  Options:

  stream      default telemetry:t
  group       default processor
  ids         an array ref of entry ids to follow; without it, every
              pending entry is followed
  thief_min_idle
              after each sample, another consumer ("thief") runs
              XAUTOCLAIM ... <thief_min_idle ms> 0-0 JUSTID

Returns a hash ref:

  samples     number of samples
  elapsed     seconds the sampling took
  max_idle    highest idle time (ms) of a followed entry
  max_count   highest delivery count of a followed entry
  consumers   (with ids) consumer => number of (sample, id) pairs that
              were pending on it; '(not pending)' for the others
  seen        "id:consumer id:consumer ..." of all pending entries, in
              XPENDING order => number of samples that showed it
  stolen      ids XAUTOCLAIM claimed, joined by spaces ('' if none)

=cut

sub sample_pending
{
	my ($redis, %opts) = @_;
	my $seconds = $opts{seconds} // croak 'sample_pending: seconds';
	my $stream = $opts{stream} // 'telemetry:t';
	my $group = $opts{group} // 'processor';
	my $ids = $opts{ids};

	my $sock = IO::Socket::INET->new(
		PeerAddr => $redis->host,
		PeerPort => $redis->port,
		Proto => 'tcp') or die "connect to Redis: $!";
	my %r = (
		samples => 0,
		max_idle => 0,
		max_count => 0,
		consumers => {},
		seen => {},
		stolen => '');
	my $start = Time::HiRes::time();
	while (Time::HiRes::time() - $start < $seconds)
	{
		my @p = @{ _resp($sock, 'XPENDING', $stream, $group, '-', '+', '100') };
		$r{samples}++;
		$r{seen}{ join(' ', map { "$_->[0]:$_->[1]" } @p) }++;
		my @followed;
		if ($ids)
		{
			my %p = map { $_->[0] => $_ } @p;
			foreach my $id (@$ids)
			{
				my $e = $p{$id};
				if (!defined $e)
				{
					$r{consumers}{'(not pending)'}++;
					next;
				}
				$r{consumers}{ $e->[1] }++;
				push @followed, $e;
			}
		}
		else
		{
			@followed = @p;
		}
		foreach my $e (@followed)
		{
			$r{max_idle} = $e->[2] if $e->[2] > $r{max_idle};
			$r{max_count} = $e->[3] if $e->[3] > $r{max_count};
		}
		if (defined $opts{thief_min_idle})
		{
			# [cursor, [claimed ids], [deleted ids]]
			my $c = _resp($sock, 'XAUTOCLAIM', $stream, $group, 'thief',
				$opts{thief_min_idle}, '0-0', 'JUSTID');
			$r{stolen} .= join(' ', @{ $c->[1] });
		}
		usleep(20_000);
	}
	$r{elapsed} = Time::HiRes::time() - $start;
	close($sock);
	return \%r;
}

# A minimal RESP client: send a command, return the reply: a string, an
# integer, undef (nil), an array ref; dies on an error reply.
sub _resp
{
	my ($sock, @args) = @_;
	my $req = '*' . scalar(@args) . "\r\n";
	$req .= '$' . length($_) . "\r\n$_\r\n" foreach @args;
	print $sock $req or die "send: $!";
	return _resp_read($sock);
}

sub _resp_read
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
		return [ map { _resp_read($sock) } 1 .. $rest ];
	}
	die "unexpected reply: $line";
}

=pod

=item build_loadgen()

Build bench/loadgen in the tree the tests run from (C<TESTDIR>; make
tapcheck runs them in a copy owned by the test user) and return its path.
Bails out if TESTDIR is unset or the build fails.

=cut

sub build_loadgen
{
	my $srcdir = $ENV{TESTDIR}
	  or die "TESTDIR is not set (run through make tapcheck)";
	my $loadgen = "$srcdir/bench/loadgen";
	my ($out, $err) = ('', '');
	my $built = IPC::Run::run(
		[ 'make', '--no-print-directory', '-C', $srcdir, 'bench/loadgen' ],
		'<', \undef, '>', \$out, '2>', \$err);
	BAIL_OUT("make bench/loadgen failed:\n$out$err")
	  unless $built && -x $loadgen;
	return $loadgen;
}

=pod

=back

=head1 NODES THAT CRASHED

PostgreSQL::Test::Cluster stops every node at exit and bails out (which
ends the whole prove run) when one is no longer running, e.g. because the
worker crashed the server.  This module's END block, which runs before
Cluster's, stops every node with C<fail_ok> and reports a node that had
died, so that the test fails instead of bailing out.  A test that stops a
node itself after it may have crashed should pass C<fail_ok =E<gt> 1> too.

=cut

END
{
	my $exit_code = $?;
	foreach my $node (@PostgreSQL::Test::Cluster::all_nodes)
	{
		next if $node->stop('immediate', fail_ok => 1);
		diag "node \"" . $node->name
		  . "\" was not running at the end of the test (crashed?)";
		$exit_code ||= 1;
	}
	$? = $exit_code;
}

1;
