/*-------------------------------------------------------------------------
 *
 * worker_internal.h
 *	  What the three parts of the background worker share: its state and
 *	  the functions each part offers the others.
 *
 *	worker.c	startup, the loop, configuration reloads, backoff, error
 *				recovery, the extension and table checks
 *	session.c	the Redis side: connection, consumer group, reading (new,
 *				history, claims), group figures; session_ownership.c
 *				keeps the entries we hold ours
 *	batch.c		a batch's life: decode, device state, transaction, XACK
 *
 * All of it runs in the one worker process; nothing here is shared memory.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WORKER_INTERNAL_H
#define WORKER_INTERNAL_H

#include "postgres.h"

#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "processor.h"

/* Longest wait for an XACK reply, while interrupts are held. */
#define ACK_TIMEOUT_MS		1000

/* Invalid entries parked (dead_letter = off) that we keep fresh, at most. */
#define PARKED_MAX			10000

/* How often the group's lag and pending counts are asked for. */
#define GROUP_POLL_MS		1000

/* A batch read from Redis, kept until its outcome is acknowledged. */
typedef struct Batch
{
	bool		present;
	bool		decoded;
	bool		committed;		/* committed, XACK still owed */
	bool		ack_safe;		/* the commit completed (see batch.c) */
	char	   *stream;			/* where it was read from */
	char	   *group;
	StreamEntry *entries;
	int			nentries;
	Position   *positions;
	const StreamEntry **position_entries;	/* the entry of each position */
	int			npositions;
	DeadLetter *dead;
	int			ndead;
	char	  **ack_ids;		/* ids whose outcome the commit holds */
	int			nack;
	WriteResult result;
	TimestampTz touched_at;		/* read or last XCLAIM ... JUSTID */
} Batch;

/* Everything one worker remembers between steps. */
typedef struct Worker
{
	int			number;
	MemoryContext batch_cxt;	/* the batch; reset once it is acknowledged */
	MemoryContext decode_cxt;	/* one entry's decoding; reset after each */
	Batch		batch;

	RedisConn  *redis;
	bool		in_redis;		/* a Redis command is under way */
	char	   *redis_key;		/* settings the connection was made with */
	bool		group_ready;
	bool		group_from_zero;	/* re-create the group at 0 (NOGROUP) */
	bool		history;		/* reading our own pending entries */
	char		cursor[STREAM_ID_BUFLEN];

	/* what we consume; changes only when a switch has drained the old */
	char	   *stream;
	char	   *group;
	char	   *consumer;
	bool		switch_pending;

	bool		extension_ok;
	bool		extension_hinted;
	bool		tables_ready;
	bool		announced_ready;
	bool		ever_connected;	/* a later connect is a reconnect */
	int			read_count;		/* COUNT of new reads; halved on oversize */
	bool		oversized_pending;	/* history's next entry is too large */
	char		claim_cursor[STREAM_ID_BUFLEN];	/* XAUTOCLAIM scan position */
	TimestampTz last_claim;		/* when the last claim scan ended */
	HTAB	   *parked;			/* ids of invalid entries left pending */
	TimestampTz parked_touched_at;
	TimestampTz last_group_poll;	/* last XINFO for lag and pending */
	int			backoff_ms;
	char		last_error[256];
} Worker;

/* worker.c */
extern void worker_wait_ms(long ms);
extern void worker_fail(Worker *w, const char *msg);
extern void worker_backoff_wait(Worker *w);
extern char *worker_consumer_name(int number);
extern void worker_set_string(char **dst, const char *src);
extern void worker_reload_config(Worker *w);
extern void worker_begin_work(const char *activity);
extern void worker_commit_work(void);
extern bool worker_extension_installed(void);

/* session.c */
extern bool session_ensure(Worker *w);
extern void session_disconnect(Worker *w);
extern void session_failed(Worker *w, RedisResult rc, const char *what);
extern char *session_settings_key(void);
extern void session_apply_switch(Worker *w);
extern void session_read_batch(Worker *w);
extern void session_poll_group_info(Worker *w);

/* session_ownership.c */
extern void session_park_entry(Worker *w, const StreamEntry *e,
							   const char *error);
extern void session_forget_parked(Worker *w);
extern void session_keep_ownership(Worker *w);
extern long session_ms_until_touch(Worker *w);

/* batch.c */
extern void batch_drop(Worker *w);
extern void batch_process(Worker *w);
extern void batch_ack(Worker *w);

#endif							/* WORKER_INTERNAL_H */
