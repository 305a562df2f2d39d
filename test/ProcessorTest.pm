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
use Time::HiRes qw(usleep);

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(new_node wait_for_rows poll_until pending_count log_tail);

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
