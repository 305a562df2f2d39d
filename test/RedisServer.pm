=pod

=head1 NAME

RedisServer - a real redis-server on a free loopback port, for TAP tests

=head1 SYNOPSIS

  use RedisServer;

  my $redis = RedisServer->new;          # started, answers PING
  my $id = $redis->xadd('telemetry:t', device_id => 'd1', ts => '1', ...);
  my $n  = $redis->cli('XLEN', 'telemetry:t');
  $redis->stop;                          # SIGTERM, waits for the exit
  $redis->start;                         # again, same port, empty data
  $redis->kill9;

=head1 DESCRIPTION

Each server runs C<redis-server --bind 127.0.0.1 --port P --save ''
--appendonly no --daemonize no> in the foreground as a child of the test,
with its pid recorded, so it is stopped by pid: by C<stop>/C<kill9>, when the
object is destroyed, and in an END block for any still running, whatever
the test's outcome.  The port comes from
PostgreSQL::Test::Cluster::get_free_port, which also reserves it against
the test's PostgreSQL nodes.  Nothing is persisted, so a restart starts
empty, like a Redis that lost its data.

The server's log goes to
C<tmp_check/log/E<lt>testE<gt>_redis_E<lt>portE<gt>.log>, next to the
nodes' logs, and is kept after the run.

=cut

package RedisServer;

use strict;
use warnings;

use Carp;
use File::Basename qw(basename);
use File::Spec;
use IPC::Run;
use POSIX qw(WNOHANG);
use Scalar::Util qw(weaken);
use Time::HiRes qw(usleep);

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# Every server created by this process, weak references; see END.
my @servers;

=pod

=head1 METHODS

=over

=item RedisServer->new(%opts)

Start a server and wait until it answers PING.  Options: C<port> (default: a
free one), C<args> (array ref of extra redis-server arguments, e.g.
C<['--requirepass', 'secret']>), C<start =E<gt> 0> to create it stopped.

=cut

sub new
{
	my ($class, %opts) = @_;
	my $port = $opts{port} // PostgreSQL::Test::Cluster::get_free_port();
	my $test = basename($0);
	$test =~ s/\.[^.]*$//;

	my $self = bless {
		host => '127.0.0.1',
		port => $port,
		dir => File::Spec->rel2abs(PostgreSQL::Test::Utils::tempdir("redis_$port")),
		logfile => File::Spec->rel2abs(
			"$PostgreSQL::Test::Utils::log_path/${test}_redis_$port.log"),
		args => $opts{args} // [],
		pid => undef,
		owner => $$,
	}, $class;

	push @servers, $self;
	weaken($servers[-1]);

	$self->start unless defined $opts{start} && !$opts{start};
	return $self;
}

=pod

=item $redis->host, $redis->port, $redis->pid, $redis->logfile

Where it listens (always 127.0.0.1), its pid (undef when stopped), its log.

=cut

sub host    { return $_[0]->{host}; }
sub port    { return $_[0]->{port}; }
sub pid     { return $_[0]->{pid}; }
sub logfile { return $_[0]->{logfile}; }

=pod

=item $redis->start

Start the server (again) on its port and wait, up to the TAP timeout, until
it answers PING.  Dies if it exits or never answers.

=cut

sub start
{
	my ($self) = @_;
	croak "redis-server on port $self->{port} is already running"
	  if defined $self->{pid};

	my @cmd = (
		'redis-server',
		'--bind' => $self->{host},
		'--port' => $self->{port},
		'--save' => '',
		'--appendonly' => 'no',
		'--daemonize' => 'no',
		'--dir' => $self->{dir},
		'--logfile' => $self->{logfile},
		@{ $self->{args} });

	my $pid = fork();
	croak "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		# The child must never return into the test (END blocks, Test::More).
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>>', $self->{logfile});
		open(STDERR, '>&', \*STDOUT);
		exec { $cmd[0] } @cmd
		  or print STDERR "exec redis-server: $!\n";
		POSIX::_exit(127);
	}
	$self->{pid} = $pid;

	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	while (1)
	{
		if (waitpid($pid, WNOHANG) == $pid)
		{
			my $status = $?;
			$self->{pid} = undef;
			croak "redis-server on port $self->{port} exited at start"
			  . " (wait status $status); log:\n"
			  . (-f $self->{logfile} ? slurp_file($self->{logfile}) : '');
		}
		my ($out, $ok) = $self->_run_cli(['PING']);
		last if $ok && $out eq 'PONG';
		if (time() > $deadline)
		{
			$self->kill9;
			croak "redis-server on port $self->{port} did not answer PING";
		}
		usleep(20_000);
	}
	note "redis-server pid $pid listening on $self->{host}:$self->{port}";
	return;
}

=pod

=item $redis->stop

SIGTERM, then wait for the exit (SIGKILL after 10 s).  No-op when stopped.

=cut

sub stop
{
	my ($self) = @_;
	my $pid = $self->{pid};
	return unless defined $pid;

	kill 'TERM', $pid;
	for (1 .. 500)
	{
		if (waitpid($pid, WNOHANG) == $pid)
		{
			$self->{pid} = undef;
			note "redis-server on port $self->{port} stopped";
			return;
		}
		usleep(20_000);
	}
	$self->kill9;
	return;
}

=pod

=item $redis->kill9

SIGKILL and reap.  No-op when stopped.

=cut

sub kill9
{
	my ($self) = @_;
	my $pid = $self->{pid};
	return unless defined $pid;

	kill 'KILL', $pid;
	waitpid($pid, 0);
	$self->{pid} = undef;
	note "redis-server on port $self->{port} killed";
	return;
}

=pod

=item $redis->restart

stop, then start on the same port (empty: nothing is persisted).

=cut

sub restart
{
	my ($self) = @_;
	$self->stop;
	$self->start;
	return;
}

=pod

=item $redis->cli(@args)

Run C<redis-cli -h 127.0.0.1 -p PORT @args> and return its standard output
without the final newline.  Not on a terminal, redis-cli prints replies
raw: one line per array element, an error reply as its text
(C<ERR ...>).  Dies if redis-cli fails (e.g. the server is down).

=item $redis->cli_stdin($input, @args)

The same with C<-x>: the last argument is $input, read from standard input,
for values too big for a command line (over 128 kB).

=cut

sub cli
{
	my ($self, @args) = @_;
	my ($out, $ok, $err) = $self->_run_cli(\@args);
	croak "redis-cli @args failed: $err" unless $ok;
	return $out;
}

sub cli_stdin
{
	my ($self, $input, @args) = @_;
	my ($out, $ok, $err) = $self->_run_cli([ '-x', @args ], $input);
	croak "redis-cli -x @args failed: $err" unless $ok;
	return $out;
}

=pod

=item $redis->xadd($stream, field => value, ...)

XADD with an auto id; returns the id.  Fields keep their order.

=cut

sub xadd
{
	my ($self, $stream, @pairs) = @_;
	croak "xadd: odd number of field/value arguments" if @pairs % 2;
	my $id = $self->cli('XADD', $stream, '*', @pairs);
	croak "XADD failed: $id" unless $id =~ /^\d+-\d+$/;
	return $id;
}

=pod

=item $redis->pipeline(@commands)

Send many commands at once through C<redis-cli --pipe>; each command is an
array ref of arguments (any bytes).  Returns the number of replies; dies
if any reply was an error.

=cut

sub pipeline
{
	my ($self, @commands) = @_;
	my $resp = '';
	foreach my $cmd (@commands)
	{
		$resp .= '*' . scalar(@$cmd) . "\r\n";
		foreach my $arg (@$cmd)
		{
			my $bytes = $arg;
			utf8::encode($bytes) if utf8::is_utf8($bytes);
			$resp .= '$' . length($bytes) . "\r\n$bytes\r\n";
		}
	}
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run(
		[ 'redis-cli', '-h', $self->{host}, '-p', $self->{port}, '--pipe' ],
		'<', \$resp, '>', \$out, '2>', \$err);
	croak "redis-cli --pipe failed: $out$err"
	  unless $ok && $out =~ /errors: 0, replies: (\d+)/;
	return $1;
}

# Run redis-cli; returns (stdout without final newline, success, stderr).
sub _run_cli
{
	my ($self, $args, $input) = @_;
	my ($out, $err) = ('', '');
	$input //= '';
	my $ok = IPC::Run::run(
		[ 'redis-cli', '-h', $self->{host}, '-p', $self->{port}, @$args ],
		'<', \$input, '>', \$out, '2>', \$err);
	chomp $out;
	return ($out, $ok, $err ne '' ? $err : $out);
}

sub DESTROY
{
	my ($self) = @_;
	$self->stop if $$ == $self->{owner};
	return;
}

# Stop every server still running, keeping the test's exit status.
END
{
	my $exit_code = $?;
	foreach my $server (@servers)
	{
		next unless defined $server && $$ == $server->{owner};
		$server->kill9;
	}
	$? = $exit_code;
}

=pod

=back

=cut

1;
