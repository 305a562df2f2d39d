/*-------------------------------------------------------------------------
 *
 * redis_commands.c
 *	  The commands the worker sends over a RedisConn (XGROUP CREATE,
 *	  XREADGROUP, XACK, and any other as an argument vector) and the copying
 *	  of their replies into palloc'd memory.
 *
 * A reply is validated without allocating, then copied under PG_FINALLY,
 * which frees it: no hiredis memory is held across anything that can
 * throw.  Lengths are checked to fit an int before anything is copied.
 * The connection itself, its waits and its deadlines are redis.c's.
 *
 *-------------------------------------------------------------------------
 */
#include "processor.h"

#include <limits.h>

#include "redis_internal.h"

static RedisResult redis_ack_reply(RedisConn *conn, redisReply *reply,
								   int64 *acked);
static RedisResult redis_read_group_reply(RedisConn *conn, redisReply *reply,
										  StreamEntry **entries,
										  int *nentries);

/*
 * XGROUP CREATE stream group start_id MKSTREAM.  An existing group
 * (BUSYGROUP) is success; any other error reply is REDIS_ERROR_REPLY.
 */
RedisResult
redis_ensure_group(RedisConn *conn, const char *stream, const char *group,
				   const char *start_id)
{
	const char *argv[6] = {"XGROUP", "CREATE", stream, group, start_id, "MKSTREAM"};
	redisReply *reply;
	RedisResult result;

	result = redis_call(conn, 6, argv, NULL, 0, &reply);
	if (result != REDIS_OK)
		return result;
	if (reply->type == REDIS_REPLY_ERROR)
	{
		if (reply->len >= 9 && strncmp(reply->str, "BUSYGROUP", 9) == 0)
		{
			freeReplyObject(reply);
			return REDIS_OK;
		}
		return redis_error_reply(conn, reply);
	}
	if (reply->type != REDIS_REPLY_STATUS)
		return redis_unexpected_reply(conn, reply, "XGROUP CREATE");
	freeReplyObject(reply);
	return REDIS_OK;
}

/*
 * Check that one entry of an XREADGROUP reply is [id, [f1, v1, ...]] or
 * [id, nil], with lengths that fit an int.  Allocates nothing.
 */
static bool
redis_entry_valid(const redisReply *entry)
{
	const redisReply *fields;
	size_t		i;

	if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
		entry->element[0]->type != REDIS_REPLY_STRING ||
		entry->element[0]->len > INT_MAX)
		return false;
	fields = entry->element[1];
	if (fields->type == REDIS_REPLY_NIL)
		return true;
	if (fields->type != REDIS_REPLY_ARRAY || fields->elements % 2 != 0 ||
		fields->elements > INT_MAX)
		return false;
	for (i = 0; i < fields->elements; i++)
	{
		if (fields->element[i]->type != REDIS_REPLY_STRING ||
			fields->element[i]->len > INT_MAX)
			return false;
	}
	return true;
}

/*
 * Find the entries of the single stream in an XREADGROUP reply
 * ([[key, [entry...]]]), checking every entry.  Returns NULL for a reply
 * of the wrong shape.  An empty outer array is taken as "no entries" and
 * returned as is.  Allocates nothing.
 */
static const redisReply *
redis_stream_entries(const redisReply *reply)
{
	const redisReply *stream;
	const redisReply *entries;
	size_t		i;

	if (reply->type != REDIS_REPLY_ARRAY || reply->elements > 1)
		return NULL;
	if (reply->elements == 0)
		return reply;
	stream = reply->element[0];
	if (stream->type != REDIS_REPLY_ARRAY || stream->elements != 2 ||
		stream->element[0]->type != REDIS_REPLY_STRING ||
		stream->element[1]->type != REDIS_REPLY_ARRAY ||
		stream->element[1]->elements > INT_MAX)
		return NULL;
	entries = stream->element[1];
	for (i = 0; i < entries->elements; i++)
	{
		if (!redis_entry_valid(entries->element[i]))
			return NULL;
	}
	return entries;
}

/* Copy len bytes and a NUL to *cursor; return the copy, advance *cursor. */
static char *
redis_take_string(char **cursor, const char *str, size_t len)
{
	char	   *copy = *cursor;

	memcpy(copy, str, len);
	copy[len] = '\0';
	*cursor += len + 1;
	return copy;
}

/*
 * Copy one validated entry into palloc'd memory: one chunk for the id and
 * all strings, one for the pointers, one for the lengths.  An entry without
 * fields (nil, or an empty array, which XADD cannot produce) gets
 * nfields = -1.  May throw (out of memory).
 */
static void
redis_copy_entry(const redisReply *src, StreamEntry *dst)
{
	const redisReply *id = src->element[0];
	const redisReply *fields = src->element[1];
	int			n = 0;
	Size		total = id->len + 1;
	char	   *cursor;
	int			i;

	if (fields->type == REDIS_REPLY_ARRAY)
		n = (int) fields->elements / 2;
	for (i = 0; i < 2 * n; i++)
		total += fields->element[i]->len + 1;

	cursor = MemoryContextAllocHuge(CurrentMemoryContext, total);
	dst->id = redis_take_string(&cursor, id->str, id->len);
	dst->deliveries = 0;
	dst->error = NULL;
	if (n == 0)
	{
		dst->nfields = -1;
		dst->names = dst->values = NULL;
		dst->name_lens = dst->value_lens = NULL;
		return;
	}

	dst->nfields = n;
	dst->names = palloc(2 * n * sizeof(char *));
	dst->values = dst->names + n;
	dst->name_lens = palloc(2 * n * sizeof(int));
	dst->value_lens = dst->name_lens + n;
	for (i = 0; i < n; i++)
	{
		const redisReply *name = fields->element[2 * i];
		const redisReply *value = fields->element[2 * i + 1];

		dst->names[i] = redis_take_string(&cursor, name->str, name->len);
		dst->name_lens[i] = (int) name->len;
		dst->values[i] = redis_take_string(&cursor, value->str, value->len);
		dst->value_lens[i] = (int) value->len;
	}
}

/*
 * XREADGROUP GROUP group consumer COUNT count [BLOCK block_ms] STREAMS
 * stream start.  A nil reply (nothing new, or BLOCK timed out) gives
 * *nentries = 0.  Entries are palloc'd in the current memory context.
 * NOGROUP -> REDIS_NOGROUP; other error replies -> REDIS_ERROR_REPLY; a
 * reply of the wrong shape drops the connection (REDIS_FAILED).  Note that
 * block_ms = 0 is BLOCK 0, which Redis takes as "forever": the reply
 * timeout then drops the connection.
 */
RedisResult
redis_read_group(RedisConn *conn, const char *stream, const char *group,
				 const char *consumer, int count, int block_ms,
				 const char *start, StreamEntry **entries, int *nentries)
{
	const char *argv[11];
	int			argc = 0;
	char		countbuf[16];
	char		blockbuf[16];
	redisReply *reply;
	RedisResult result;

	*entries = NULL;
	*nentries = 0;

	snprintf(countbuf, sizeof(countbuf), "%d", count);
	argv[argc++] = "XREADGROUP";
	argv[argc++] = "GROUP";
	argv[argc++] = group;
	argv[argc++] = consumer;
	argv[argc++] = "COUNT";
	argv[argc++] = countbuf;
	if (block_ms >= 0)
	{
		snprintf(blockbuf, sizeof(blockbuf), "%d", block_ms);
		argv[argc++] = "BLOCK";
		argv[argc++] = blockbuf;
	}
	argv[argc++] = "STREAMS";
	argv[argc++] = stream;
	argv[argc++] = start;

	result = redis_call(conn, argc, argv, NULL, block_ms, &reply);
	if (result != REDIS_OK)
		return result;
	return redis_read_group_reply(conn, reply, entries, nentries);
}

/*
 * redis_read_group_resume
 *		Go on waiting for the reply of a read that returned
 *		REDIS_INTERRUPTED, within its original deadline, and return it as
 *		redis_read_group would.  A further reload interrupts it again.
 */
RedisResult
redis_read_group_resume(RedisConn *conn, StreamEntry **entries,
						int *nentries)
{
	redisReply *reply;
	RedisResult result;

	*entries = NULL;
	*nentries = 0;
	result = redis_resume(conn, true, &reply);
	if (result != REDIS_OK)
		return result;
	return redis_read_group_reply(conn, reply, entries, nentries);
}

/*
 * Turn an XREADGROUP reply into palloc'd entries, freeing the reply on
 * every path.
 */
static RedisResult
redis_read_group_reply(RedisConn *conn, redisReply *reply,
					   StreamEntry **entries, int *nentries)
{
	const redisReply *list;

	if (reply->type == REDIS_REPLY_ERROR)
		return redis_error_reply(conn, reply);
	if (reply->type == REDIS_REPLY_NIL)
	{
		freeReplyObject(reply);
		return REDIS_OK;
	}
	if ((list = redis_stream_entries(reply)) == NULL)
		return redis_unexpected_reply(conn, reply, "XREADGROUP");

	PG_TRY();
	{
		int			n = (int) list->elements;
		StreamEntry *result_entries = NULL;
		int			i;

		if (n > 0)
			result_entries = palloc(n * sizeof(StreamEntry));
		for (i = 0; i < n; i++)
			redis_copy_entry(list->element[i], &result_entries[i]);
		*entries = result_entries;
		*nentries = n;
	}
	PG_FINALLY();
	{
		freeReplyObject(reply);
	}
	PG_END_TRY();
	return REDIS_OK;
}

/*
 * XACK stream group id...; *acked gets Redis's count of ids that were
 * pending and are now acknowledged.  nids = 0 sends nothing.
 */
RedisResult
redis_ack(RedisConn *conn, const char *stream, const char *group,
		  char **ids, int nids, int64 soft_ms, int64 *acked)
{
	const char **argv;
	redisReply *reply;
	RedisResult result;
	int			i;

	*acked = 0;
	if (nids <= 0)
		return REDIS_OK;

	/* allocate before the command: nothing of hiredis is held yet */
	argv = palloc((nids + 3) * sizeof(char *));
	argv[0] = "XACK";
	argv[1] = stream;
	argv[2] = group;
	for (i = 0; i < nids; i++)
		argv[i + 3] = ids[i];

	conn->next_soft_timeout_ms = soft_ms;
	result = redis_call(conn, nids + 3, argv, NULL, 0, &reply);
	pfree(argv);
	if (result != REDIS_OK)
		return result;
	return redis_ack_reply(conn, reply, acked);
}

/*
 * Check an XACK reply and free it.
 */
static RedisResult
redis_ack_reply(RedisConn *conn, redisReply *reply, int64 *acked)
{
	if (reply->type == REDIS_REPLY_ERROR)
		return redis_error_reply(conn, reply);
	if (reply->type != REDIS_REPLY_INTEGER)
		return redis_unexpected_reply(conn, reply, "XACK");
	*acked = reply->integer;
	freeReplyObject(reply);
	return REDIS_OK;
}

/*
 * redis_ack_resume
 *		Go on waiting, within the call's full deadline, for the reply of an
 *		XACK that returned REDIS_INTERRUPTED at its soft deadline.
 */
RedisResult
redis_ack_resume(RedisConn *conn, int64 *acked)
{
	redisReply *reply;
	RedisResult result;

	*acked = 0;
	result = redis_resume(conn, false, &reply);
	if (result != REDIS_OK)
		return result;
	return redis_ack_reply(conn, reply, acked);
}

/* Check that every string and array in a reply fits an int.  No allocation. */
static bool
redis_value_valid(const redisReply *reply)
{
	size_t		i;

	switch (reply->type)
	{
		case REDIS_REPLY_STRING:
		case REDIS_REPLY_STATUS:
		case REDIS_REPLY_ERROR:
			return reply->len <= INT_MAX;
		case REDIS_REPLY_INTEGER:
		case REDIS_REPLY_NIL:
			return true;
		case REDIS_REPLY_ARRAY:
			if (reply->elements > INT_MAX)
				return false;
			for (i = 0; i < reply->elements; i++)
			{
				if (!redis_value_valid(reply->element[i]))
					return false;
			}
			return true;
	}
	return false;
}

/*
 * Copy a validated reply into a palloc'd RedisValue (recursion depth is
 * bounded by hiredis's reader).  May throw (out of memory).
 */
static void
redis_copy_value(const redisReply *src, RedisValue *dst)
{
	int			i;

	memset(dst, 0, sizeof(RedisValue));
	switch (src->type)
	{
		case REDIS_REPLY_INTEGER:
			dst->type = REDIS_VALUE_INTEGER;
			dst->integer = src->integer;
			break;
		case REDIS_REPLY_STRING:
		case REDIS_REPLY_STATUS:
		case REDIS_REPLY_ERROR:
			dst->type = src->type == REDIS_REPLY_STRING ? REDIS_VALUE_STRING :
				src->type == REDIS_REPLY_STATUS ? REDIS_VALUE_STATUS :
				REDIS_VALUE_ERROR;
			dst->str = MemoryContextAllocHuge(CurrentMemoryContext, src->len + 1);
			memcpy(dst->str, src->str, src->len);
			dst->str[src->len] = '\0';
			dst->len = (int) src->len;
			break;
		case REDIS_REPLY_ARRAY:
			dst->type = REDIS_VALUE_ARRAY;
			dst->nelements = (int) src->elements;
			if (dst->nelements > 0)
				dst->elements = palloc(dst->nelements * sizeof(RedisValue));
			for (i = 0; i < dst->nelements; i++)
				redis_copy_value(src->element[i], &dst->elements[i]);
			break;
		default:
			dst->type = REDIS_VALUE_NIL;
			break;
	}
}

/*
 * Run any command given as an argument vector (argvlen NULL: strlen of each
 * argument) that may block up to block_ms in Redis (0 for an immediate
 * command).  On REDIS_OK *value is a palloc'd copy of the reply.  A
 * top-level error reply gives REDIS_NOGROUP or REDIS_ERROR_REPLY with
 * *value NULL and the text in redis_last_error().
 */
RedisResult
redis_command_argv(RedisConn *conn, int argc, const char **argv,
				   const size_t *argvlen, int block_ms, RedisValue **value)
{
	redisReply *reply;
	RedisResult result;

	*value = NULL;
	result = redis_call(conn, argc, argv, argvlen, block_ms, &reply);
	if (result != REDIS_OK)
		return result;
	if (reply->type == REDIS_REPLY_ERROR)
		return redis_error_reply(conn, reply);
	if (!redis_value_valid(reply))
	{
		char		name[32];

		snprintf(name, sizeof(name), "%.*s",
				 (int) (argvlen ? Min(argvlen[0], sizeof(name)) : sizeof(name)),
				 argv[0]);
		return redis_unexpected_reply(conn, reply, name);
	}

	PG_TRY();
	{
		RedisValue *copy = palloc(sizeof(RedisValue));

		redis_copy_value(reply, copy);
		*value = copy;
	}
	PG_FINALLY();
	{
		freeReplyObject(reply);
	}
	PG_END_TRY();
	return REDIS_OK;
}
