/*-------------------------------------------------------------------------
 *
 * redis.c
 *	  The worker's Redis client: connection, handshake, and non-blocking
 *	  I/O through the process latch.  The commands and their replies are
 *	  redis_commands.c's.
 *
 * Rules a reader needs:
 *
 * - Every wait goes through WaitLatchOrSocket() on MyLatch, so SIGTERM,
 *   SIGHUP and postmaster death are served while a command is out, even an
 *   XREADGROUP ... BLOCK.  CHECK_FOR_INTERRUPTS() runs after every wait and
 *   may throw: FATAL for SIGTERM (die), an ERROR for a query cancel.  A
 *   SIGHUP that arrives during a call ends it with REDIS_INTERRUPTED.
 *
 * - Memory.  hiredis malloc()s the redisContext, its buffers and every
 *   redisReply.  A RedisConn is malloc'd as well (it outlives memory context
 *   resets and aborted transactions) and only redis_disconnect() frees it.
 *   A reply is never held across a call that can throw: it is validated
 *   without allocating, then copied into palloc'd memory under PG_FINALLY,
 *   which frees it.  What callers receive (StreamEntry arrays, RedisValue
 *   trees, the error of redis_connect) is palloc'd in the memory context
 *   that is current at the call.
 *
 * - A command in progress marks the connection busy.  If an ERROR escapes
 *   from a wait, the mark stays, and the next call on that connection fails
 *   with REDIS_FAILED instead of reading a stale reply; redis_connect()
 *   frees its half-made connection itself on that path.
 *
 * - hiredis comes in through redis_internal.h only (see there why after
 *   processor.h), shared with redis_commands.c; no other file includes it.
 *
 * - Nothing here logs.  Messages go to redis_last_error() (or to *error of
 *   redis_connect) and the caller decides what to report.  No message ever
 *   contains the password or any argument of a command.
 *
 *-------------------------------------------------------------------------
 */
#include "processor.h"

#include <limits.h>
#include <netdb.h>
#include <sys/socket.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "portability/instr_time.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "utils/memutils.h"

#include "redis_internal.h"

/* Why redis_wait() stopped waiting. */
typedef enum RedisWaitResult
{
	RWAIT_READY,				/* the socket is ready */
	RWAIT_TIMEOUT,				/* the deadline of the call passed */
	RWAIT_RELOAD,				/* a SIGHUP arrived during the call */
	RWAIT_SOFT					/* the call's soft deadline passed */
} RedisWaitResult;


static void redis_set_error(RedisConn *conn, const char *fmt,...) pg_attribute_printf(2, 3);

/*
 * Store a message for redis_last_error().  Never throws.
 */
static void
redis_set_error(RedisConn *conn, const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	vsnprintf(conn->errbuf, sizeof(conn->errbuf), fmt, args);
	va_end(args);
}

/*
 * Close the socket and free the hiredis context now; the RedisConn stays
 * (with its message) until redis_disconnect().  Never throws.
 */
void
redis_drop(RedisConn *conn)
{
	if (conn->ctx != NULL)
		redisFree(conn->ctx);
	conn->ctx = NULL;
	conn->state = RCONN_BROKEN;
}

/*
 * Start the clock of a call: its deadline and the SIGHUP baseline.  A
 * SIGHUP that was already pending when the call began does not interrupt
 * it: the caller knows about it and chose to finish this call first.
 */
static void
redis_begin(RedisConn *conn, int64 timeout_ms)
{
	INSTR_TIME_SET_CURRENT(conn->call_start);
	conn->call_timeout_ms = timeout_ms;
	conn->soft_timeout_ms = -1;
	conn->reload_was_pending = ConfigReloadPending;
	conn->reply_bytes = 0;
}

/*
 * Wait until the socket is ready for socket_event (WL_SOCKET_READABLE or
 * WL_SOCKET_WRITEABLE), the call's deadline passes, or a SIGHUP arrives.
 * Serves interrupts after every wake-up, so this may throw.
 */
static RedisWaitResult
redis_wait(RedisConn *conn, int socket_event)
{
	for (;;)
	{
		int			events = WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | socket_event;
		long		timeout = -1;
		int			rc;

		if (conn->call_timeout_ms >= 0)
		{
			instr_time	elapsed;
			double		remaining;

			INSTR_TIME_SET_CURRENT(elapsed);
			INSTR_TIME_SUBTRACT(elapsed, conn->call_start);
			remaining = conn->call_timeout_ms - INSTR_TIME_GET_MILLISEC(elapsed);
			if (remaining <= 0)
				return RWAIT_TIMEOUT;
			if (conn->soft_timeout_ms >= 0)
			{
				double		soft = conn->soft_timeout_ms -
					INSTR_TIME_GET_MILLISEC(elapsed);

				if (soft <= 0)
					return RWAIT_SOFT;
				remaining = Min(remaining, soft);
			}
			/* round up, so that we never spin on a zero timeout */
			timeout = (long) remaining + 1;
			events |= WL_TIMEOUT;
		}

		rc = WaitLatchOrSocket(MyLatch, events, conn->ctx->fd, timeout,
							   PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
			ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();

		/* a reply that is already there is worth more than a fast reload */
		if (rc & socket_event)
			return RWAIT_READY;
		if (ConfigReloadPending && !conn->reload_was_pending)
			return RWAIT_RELOAD;
	}
}

/*
 * Turn a failed wait during a command into its result: the connection is
 * dropped either way, since the state of the command is unknown.
 */
static RedisResult
redis_wait_failed(RedisConn *conn, RedisWaitResult wait)
{
	redis_drop(conn);
	if (wait == RWAIT_RELOAD)
	{
		redis_set_error(conn, "interrupted by a configuration reload");
		return REDIS_INTERRUPTED;
	}
	redis_set_error(conn, "no reply from Redis within " INT64_FORMAT " ms",
					conn->call_timeout_ms);
	return REDIS_FAILED;
}

/*
 * Queue one command and write it out, waiting for the socket as needed.
 * On failure the connection has been dropped.  May throw (from the waits).
 */
static RedisResult
redis_send(RedisConn *conn, int argc, const char **argv,
		   const size_t *argvlen)
{
	redisContext *ctx = conn->ctx;
	RedisWaitResult wait;
	int			done = 0;

	if (redisAppendCommandArgv(ctx, argc, argv, argvlen) == REDIS_ERR)
	{
		redis_set_error(conn, "could not send command to Redis: %s", ctx->errstr);
		redis_drop(conn);
		return REDIS_FAILED;
	}

	for (;;)
	{
		if (redisBufferWrite(ctx, &done) == REDIS_ERR)
		{
			redis_set_error(conn, "could not send command to Redis: %s",
							ctx->errstr);
			redis_drop(conn);
			return REDIS_FAILED;
		}
		if (done)
			return REDIS_OK;
		if ((wait = redis_wait(conn, WL_SOCKET_WRITEABLE)) != RWAIT_READY)
			return redis_wait_failed(conn, wait);
	}
}

/*
 * Read until one whole reply has arrived, counting the bytes received
 * against max_reply_bytes.  On REDIS_OK *reply is a malloc'd hiredis reply
 * (possibly an error reply); on failure the connection has been dropped.
 * May throw (from the waits).
 */
static RedisResult
redis_receive(RedisConn *conn, redisReply **reply)
{
	redisContext *ctx = conn->ctx;
	RedisWaitResult wait;

	for (;;)
	{
		void	   *r = NULL;
		size_t		before;

		if (redisGetReplyFromReader(ctx, &r) == REDIS_ERR)
		{
			redis_set_error(conn, "invalid reply from Redis: %s", ctx->errstr);
			redis_drop(conn);
			return REDIS_FAILED;
		}
		if (r != NULL)
		{
			*reply = (redisReply *) r;
			return REDIS_OK;
		}

		if ((wait = redis_wait(conn, WL_SOCKET_READABLE)) == RWAIT_RELOAD ||
			wait == RWAIT_SOFT)
		{
			/* the command is out whole: its reply can still be collected */
			redis_set_error(conn, wait == RWAIT_SOFT ?
							"reply slower than the soft deadline" :
							"interrupted by a configuration reload");
			conn->state = RCONN_AWAITING;
			return REDIS_INTERRUPTED;
		}
		if (wait != RWAIT_READY)
			return redis_wait_failed(conn, wait);

		before = ctx->reader->len;
		if (redisBufferRead(ctx) == REDIS_ERR)
		{
			redis_set_error(conn, "lost connection to Redis: %s", ctx->errstr);
			redis_drop(conn);
			return REDIS_FAILED;
		}
		/* feeding only appends (after dropping an empty buffer) */
		if (ctx->reader->len > before)
			conn->reply_bytes += ctx->reader->len - before;
		if (conn->max_reply_bytes > 0 &&
			conn->reply_bytes > conn->max_reply_bytes)
		{
			redis_set_error(conn, "reply from Redis larger than " INT64_FORMAT " bytes",
							conn->max_reply_bytes);
			redis_drop(conn);
			return REDIS_REPLY_TOO_LARGE;
		}
	}
}

/*
 * Send one command and wait for its reply, within the deadline set by
 * redis_begin().  On REDIS_OK *reply is a malloc'd hiredis reply (possibly
 * an error reply) that the caller must free before anything can throw.  On
 * any other result the connection has been dropped.  May throw (from the
 * waits); then the connection stays marked busy.
 */
static RedisResult
redis_roundtrip(RedisConn *conn, int argc, const char **argv,
				const size_t *argvlen, redisReply **reply)
{
	RedisResult result;

	*reply = NULL;
	result = redis_send(conn, argc, argv, argvlen);
	if (result == REDIS_OK)
		result = redis_receive(conn, reply);
	return result;
}

/*
 * Run one command on an established connection.  block_ms is how long the
 * command may legitimately block in Redis (0 for an immediate command); the
 * reply must arrive within block_ms + reply_timeout_ms of sending.  Same
 * contract as redis_roundtrip(), and fails at once on a connection that is
 * dropped or was left busy by a thrown ERROR.
 */
RedisResult
redis_call(RedisConn *conn, int argc, const char **argv,
		   const size_t *argvlen, int block_ms, redisReply **reply)
{
	RedisResult result;

	*reply = NULL;
	if (conn == NULL)
		return REDIS_FAILED;
	if (conn->state == RCONN_BUSY)
	{
		redis_set_error(conn, "connection to Redis left in an unknown state by an interrupted command");
		redis_drop(conn);
		return REDIS_FAILED;
	}
	if (conn->state == RCONN_AWAITING)
	{
		redis_set_error(conn, "connection to Redis dropped: an interrupted reply was abandoned");
		redis_drop(conn);
		return REDIS_FAILED;
	}
	if (conn->state != RCONN_IDLE)
	{
		redis_set_error(conn, "connection to Redis is closed after an earlier failure");
		return REDIS_FAILED;
	}

	conn->state = RCONN_BUSY;
	redis_begin(conn, conn->reply_timeout_ms <= 0 ? -1 :
				(int64) Max(block_ms, 0) + conn->reply_timeout_ms);

	/*
	 * Only a command that blocks in Redis is worth abandoning for a reload;
	 * an immediate one (an XACK after COMMIT, say) is waited for, so that a
	 * SIGHUP never costs a reconnect and redeliveries.
	 */
	if (block_ms <= 0)
		conn->reload_was_pending = true;
	conn->soft_timeout_ms = conn->next_soft_timeout_ms;
	conn->next_soft_timeout_ms = -1;
	result = redis_roundtrip(conn, argc, argv, argvlen, reply);
	if (result == REDIS_OK)
		conn->state = RCONN_IDLE;
	return result;
}

/*
 * Collect the reply of a command that a reload or its soft deadline
 * interrupted (see redis_internal.h).
 */
RedisResult
redis_resume(RedisConn *conn, bool again_on_reload, redisReply **reply)
{
	RedisResult result;

	*reply = NULL;
	if (conn == NULL || conn->state != RCONN_AWAITING)
	{
		if (conn)
			redis_drop(conn);
		return REDIS_FAILED;
	}
	conn->state = RCONN_BUSY;
	if (again_on_reload)
		conn->reload_was_pending = ConfigReloadPending;
	else
		conn->soft_timeout_ms = -1;
	result = redis_receive(conn, reply);
	if (result == REDIS_OK)
		conn->state = RCONN_IDLE;
	return result;
}

/*
 * Consume an error reply: keep its text as the message, free it, and say
 * which kind it was.  The connection stays usable.
 */
RedisResult
redis_error_reply(RedisConn *conn, redisReply *reply)
{
	RedisResult result = REDIS_ERROR_REPLY;

	if (reply->len >= 7 && strncmp(reply->str, "NOGROUP", 7) == 0)
		result = REDIS_NOGROUP;
	redis_set_error(conn, "%.*s", (int) Min(reply->len, REDIS_ERRBUF_SIZE),
					reply->str);
	freeReplyObject(reply);
	return result;
}

/*
 * A reply of the wrong shape: Redis and we disagree about the protocol, so
 * nothing more on this connection can be trusted.
 */
RedisResult
redis_unexpected_reply(RedisConn *conn, redisReply *reply, const char *command)
{
	freeReplyObject(reply);
	redis_set_error(conn, "unexpected reply to %s", command);
	redis_drop(conn);
	return REDIS_FAILED;
}

/* "host:port", with brackets around an IPv6 address. */
static void
redis_endpoint(char *buf, size_t size, const char *host, int port)
{
	if (strchr(host, ':') != NULL)
		snprintf(buf, size, "[%s]:%d", host, port);
	else
		snprintf(buf, size, "%s:%d", host, port);
}

/*
 * Open the TCP connection without blocking: hiredis starts the connect(),
 * we wait for the socket to become writeable and read SO_ERROR.  A host
 * name (not an address) is resolved by hiredis, synchronously.  On failure
 * sets the message and returns false.  May throw (from the wait).
 */
static bool
redis_open_socket(RedisConn *conn, const char *host, int port,
				  const char *endpoint)
{
	RedisWaitResult wait;
	int			err = 0;
	socklen_t	errlen = sizeof(err);

	conn->ctx = redisConnectNonBlock(host, port);
	if (conn->ctx == NULL)
	{
		redis_set_error(conn, "could not connect to Redis %s: out of memory",
						endpoint);
		return false;
	}
	if (conn->ctx->err)
	{
		redis_set_error(conn, "could not connect to Redis %s: %s",
						endpoint, conn->ctx->errstr);
		return false;
	}

	wait = redis_wait(conn, WL_SOCKET_WRITEABLE);
	if (wait == RWAIT_TIMEOUT)
	{
		redis_set_error(conn, "could not connect to Redis %s: timed out after " INT64_FORMAT " ms",
						endpoint, conn->call_timeout_ms);
		return false;
	}
	if (wait == RWAIT_RELOAD)
	{
		redis_set_error(conn, "could not connect to Redis %s: interrupted by a configuration reload",
						endpoint);
		return false;
	}
	if (getsockopt(conn->ctx->fd, SOL_SOCKET, SO_ERROR, &err, &errlen) < 0)
		err = errno;
	if (err != 0)
	{
		redis_set_error(conn, "could not connect to Redis %s: %s",
						endpoint, strerror(err));
		return false;
	}

	if (redisEnableKeepAlive(conn->ctx) == REDIS_ERR)
	{
		redis_set_error(conn, "could not enable TCP keepalive on the connection to Redis %s: %s",
						endpoint, conn->ctx->errstr);
		return false;
	}
	return true;
}

/*
 * One command of the handshake (AUTH, SELECT): any reply but a status is a
 * failure, described with the given prefix.  The password never reaches a
 * message: only the reply's text or our own words do.
 */
static bool
redis_handshake_command(RedisConn *conn, int argc, const char **argv,
						const char *what, const char *endpoint)
{
	redisReply *reply;
	char		detail[REDIS_ERRBUF_SIZE];

	if (redis_roundtrip(conn, argc, argv, NULL, &reply) != REDIS_OK)
	{
		strlcpy(detail, conn->errbuf, sizeof(detail));
		redis_set_error(conn, "could not connect to Redis %s: %s", endpoint, detail);
		return false;
	}
	if (reply->type == REDIS_REPLY_STATUS)
	{
		freeReplyObject(reply);
		return true;
	}
	if (reply->type == REDIS_REPLY_ERROR)
		redis_set_error(conn, "%s: %.*s", what,
						(int) Min(reply->len, REDIS_ERRBUF_SIZE), reply->str);
	else
		redis_set_error(conn, "%s: unexpected reply", what);
	freeReplyObject(reply);
	return false;
}

/*
 * Authenticate and select the database.  AUTH user password when a user is
 * given (ACL), AUTH password when only a password is, nothing otherwise.
 */
static bool
redis_handshake(RedisConn *conn, const char *user, const char *password,
				int db, const char *endpoint)
{
	const char *argv[3];
	char		dbname[16];

	if (user != NULL && user[0] != '\0')
	{
		argv[0] = "AUTH";
		argv[1] = user;
		argv[2] = password != NULL ? password : "";
		if (!redis_handshake_command(conn, 3, argv,
									 "Redis authentication failed", endpoint))
			return false;
	}
	else if (password != NULL && password[0] != '\0')
	{
		argv[0] = "AUTH";
		argv[1] = password;
		if (!redis_handshake_command(conn, 2, argv,
									 "Redis authentication failed", endpoint))
			return false;
	}

	if (db != 0)
	{
		char		what[64];

		snprintf(dbname, sizeof(dbname), "%d", db);
		snprintf(what, sizeof(what), "could not select Redis database %d", db);
		argv[0] = "SELECT";
		argv[1] = dbname;
		if (!redis_handshake_command(conn, 2, argv, what, endpoint))
			return false;
	}
	return true;
}

/*
 * Connect, AUTH and SELECT, all within connect_timeout_ms (<= 0: no
 * limit).  Returns the connection, or NULL with a palloc'd message in
 * *error; the message names host and port, never the password.  A SIGHUP
 * during the attempt ends it (NULL, "interrupted by a configuration
 * reload").  May throw from CHECK_FOR_INTERRUPTS (nothing leaks then) or on
 * out-of-memory for *error.
 */
RedisConn *
redis_connect(const char *host, int port, const char *user,
			  const char *password, int db, int connect_timeout_ms,
			  int reply_timeout_ms, char **error)
{
	RedisConn  *conn;
	volatile bool ok = false;
	char		endpoint[NI_MAXHOST + 16];
	char		msg[REDIS_ERRBUF_SIZE];

	redis_endpoint(endpoint, sizeof(endpoint), host, port);
	conn = calloc(1, sizeof(RedisConn));
	if (conn == NULL)
	{
		*error = psprintf("could not connect to Redis %s: out of memory", endpoint);
		return NULL;
	}
	conn->reply_timeout_ms = reply_timeout_ms;
	conn->next_soft_timeout_ms = -1;
	conn->state = RCONN_BUSY;
	redis_begin(conn, connect_timeout_ms > 0 ? connect_timeout_ms : -1);

	PG_TRY();
	{
		ok = redis_open_socket(conn, host, port, endpoint) &&
			redis_handshake(conn, user, password, db, endpoint);
	}
	PG_CATCH();
	{
		redis_disconnect(conn);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (ok)
	{
		conn->state = RCONN_IDLE;
		conn->errbuf[0] = '\0';
		return conn;
	}
	strlcpy(msg, conn->errbuf, sizeof(msg));
	redis_disconnect(conn);
	*error = pstrdup(msg);
	return NULL;
}

/*
 * Close and free a connection in any state, including NULL, dropped, or
 * left busy by a thrown ERROR.  Never throws.
 */
void
redis_disconnect(RedisConn *conn)
{
	if (conn == NULL)
		return;
	if (conn->ctx != NULL)
		redisFree(conn->ctx);
	free(conn);
}

/* The message of the last failed call; valid until the next call. */
const char *
redis_last_error(RedisConn *conn)
{
	if (conn == NULL)
		return "no connection to Redis";
	return conn->errbuf;
}

/*
 * Limit the size of any later reply, counted in bytes received from the
 * socket; a larger reply drops the connection with REDIS_REPLY_TOO_LARGE.
 * max_bytes <= 0 removes the limit.
 */
void
redis_set_max_reply_bytes(RedisConn *conn, int64 max_bytes)
{
	if (conn != NULL)
		conn->max_reply_bytes = max_bytes;
}

/*
 * Change how long a reply may take beyond its BLOCK time; returns the old
 * value, so that a caller can shorten it for one command.
 */
int
redis_set_reply_timeout(RedisConn *conn, int timeout_ms)
{
	int			old = conn->reply_timeout_ms;

	conn->reply_timeout_ms = timeout_ms;
	return old;
}
