/*-------------------------------------------------------------------------
 *
 * redis_internal.h
 *	  What redis.c (the connection and its non-blocking I/O) offers
 *	  redis_commands.c (the stream commands and their replies).  The only
 *	  header that includes hiredis; nothing here is for the other modules:
 *	  they use processor.h.
 *
 * hiredis defines REDIS_OK (0) and REDIS_ERR (-1) for its own return
 * codes.  REDIS_OK collides with RedisResult's REDIS_OK, which is 0 too, so
 * hiredis is included after processor.h, and hiredis return codes are only
 * compared with REDIS_ERR.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REDIS_INTERNAL_H
#define REDIS_INTERNAL_H

#include "processor.h"

#include "portability/instr_time.h"

#include <hiredis/hiredis.h>

#define REDIS_ERRBUF_SIZE	512

typedef enum RedisConnState
{
	RCONN_IDLE,					/* ready for a command */
	RCONN_BUSY,					/* a command (or the handshake) is out */
	RCONN_AWAITING,				/* a reload interrupted the wait for a
								 * blocking read's reply; resumable */
	RCONN_BROKEN				/* dropped; only redis_disconnect is useful */
} RedisConnState;

/* A connection; malloc'd, freed only by redis_disconnect(). */
struct RedisConn
{
	redisContext *ctx;			/* NULL once dropped */
	RedisConnState state;
	int			reply_timeout_ms;	/* <= 0: no limit */
	int64		max_reply_bytes;	/* <= 0: no limit */

	/* The call in progress. */
	instr_time	call_start;
	int64		call_timeout_ms;	/* < 0: no deadline */
	int64		soft_timeout_ms;	/* < 0: none (the call in progress) */
	int64		next_soft_timeout_ms;	/* for the next call only */
	bool		reload_was_pending; /* ConfigReloadPending at call start */
	int64		reply_bytes;	/* bytes received since the command was sent */

	char		errbuf[REDIS_ERRBUF_SIZE];
};

/*
 * Mark the connection dropped (its context freed; state RCONN_BROKEN).
 * Never throws.
 */
extern void redis_drop(RedisConn *conn);

/*
 * Run one command: send it and wait for its reply, blocking in Redis up to
 * block_ms (0 for an immediate command) plus processor.redis_timeout.  On
 * REDIS_OK *reply is a malloc'd hiredis reply (possibly an error reply)
 * that the caller frees before anything can throw; on any other result the
 * connection has been dropped (or, for REDIS_INTERRUPTED, is resumable).
 * May throw from the waits.
 */
extern RedisResult redis_call(RedisConn *conn, int argc, const char **argv,
							  const size_t *argvlen, int block_ms,
							  redisReply **reply);

/*
 * Go on waiting, within the call's deadline, for the reply of a command
 * that returned REDIS_INTERRUPTED.  again_on_reload: a further SIGHUP
 * interrupts it again (a blocking read); otherwise its soft deadline is
 * lifted and only the full deadline counts (an XACK).  Same contract as
 * redis_call; on a connection with no such reply, drops it (REDIS_FAILED).
 */
extern RedisResult redis_resume(RedisConn *conn, bool again_on_reload,
								redisReply **reply);

/* Consume an error reply: its text for redis_last_error(), its kind. */
extern RedisResult redis_error_reply(RedisConn *conn, redisReply *reply);

/* Consume a reply of the wrong shape: the connection is dropped. */
extern RedisResult redis_unexpected_reply(RedisConn *conn, redisReply *reply,
										  const char *command);

#endif							/* REDIS_INTERNAL_H */
