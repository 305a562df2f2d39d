/*-------------------------------------------------------------------------
 *
 * stream.c
 *	  The consumer group's bookkeeping commands: delivery counts (XPENDING),
 *	  claiming from dead consumers (XAUTOCLAIM), keeping ownership (XCLAIM
 *	  ... JUSTID), and the figures of processor.stats() (XINFO).
 *
 * These run rarely (after a reconnect, once per claim interval, once a
 * second), so they go through redis_command_argv's generic palloc'd reply
 * copy; the hot path (XREADGROUP, XACK) lives in redis.c.
 *
 * Every function follows redis.c's result contract (RedisResult) and may
 * throw from its waits like any Redis call.  Results are palloc'd in the
 * current memory context.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "processor.h"

/* Is v a string (bulk or status) equal to s? */
static bool
value_is(const RedisValue *v, const char *s)
{
	return v != NULL &&
		(v->type == REDIS_VALUE_STRING || v->type == REDIS_VALUE_STATUS) &&
		strcmp(v->str, s) == 0;
}

/*
 * Copy an entry given as [id, [f1, v1, ...]] or [id, nil] into dst.
 * Returns false for another shape.
 */
static bool
value_to_entry(const RedisValue *v, StreamEntry *dst)
{
	const RedisValue *fields;
	int			n;
	int			i;

	if (v->type != REDIS_VALUE_ARRAY || v->nelements != 2 ||
		v->elements[0].type != REDIS_VALUE_STRING)
		return false;
	memset(dst, 0, sizeof(*dst));
	dst->id = v->elements[0].str;
	fields = &v->elements[1];
	if (fields->type != REDIS_VALUE_ARRAY || fields->nelements == 0)
	{
		dst->nfields = -1;
		return fields->type == REDIS_VALUE_NIL ||
			fields->type == REDIS_VALUE_ARRAY;
	}
	if (fields->nelements % 2 != 0)
		return false;

	n = fields->nelements / 2;
	dst->nfields = n;
	dst->names = palloc(sizeof(char *) * n);
	dst->values = palloc(sizeof(char *) * n);
	dst->name_lens = palloc(sizeof(int) * n);
	dst->value_lens = palloc(sizeof(int) * n);
	for (i = 0; i < n; i++)
	{
		const RedisValue *name = &fields->elements[2 * i];
		const RedisValue *value = &fields->elements[2 * i + 1];

		if (name->type != REDIS_VALUE_STRING || value->type != REDIS_VALUE_STRING)
			return false;
		dst->names[i] = name->str;
		dst->name_lens[i] = name->len;
		dst->values[i] = value->str;
		dst->value_lens[i] = value->len;
	}
	return true;
}

/*
 * stream_delivery_counts
 *		Fill in entries[i].deliveries from the extended XPENDING of this
 *		consumer over the entries' id range.
 *
 * The entries must be in id order (as XREADGROUP and XAUTOCLAIM return
 * them).  An entry XPENDING does not list (acknowledged meanwhile) keeps 0.
 */
RedisResult
stream_delivery_counts(RedisConn *conn, const char *stream, const char *group,
					   const char *consumer, StreamEntry *entries, int n)
{
	const char *argv[7];
	char		countbuf[16];
	RedisValue *reply;
	RedisResult rc;
	int			i;
	int			j = 0;

	if (n <= 0)
		return REDIS_OK;
	snprintf(countbuf, sizeof(countbuf), "%d", n);
	argv[0] = "XPENDING";
	argv[1] = stream;
	argv[2] = group;
	argv[3] = entries[0].id;
	argv[4] = entries[n - 1].id;
	argv[5] = countbuf;
	argv[6] = consumer;
	rc = redis_command_argv(conn, 7, argv, NULL, 0, &reply);
	if (rc != REDIS_OK)
		return rc;
	if (reply->type != REDIS_VALUE_ARRAY)
		return REDIS_ERROR_REPLY;

	/* both lists are in id order: merge them */
	for (i = 0; i < reply->nelements; i++)
	{
		const RedisValue *p = &reply->elements[i];

		if (p->type != REDIS_VALUE_ARRAY || p->nelements != 4 ||
			p->elements[3].type != REDIS_VALUE_INTEGER)
			continue;
		while (j < n && strcmp(entries[j].id, p->elements[0].str) != 0)
			j++;
		if (j < n)
			entries[j].deliveries = p->elements[3].integer;
	}
	return REDIS_OK;
}

/*
 * stream_autoclaim
 *		XAUTOCLAIM stream group consumer min_idle cursor COUNT count.
 *
 * cursor (a buffer of STREAM_ID_BUFLEN bytes) is read and replaced by the
 * next cursor ("0-0" once the scan is complete).  Claimed entries come back
 * in *entries; ids that Redis found deleted from the stream (and dropped
 * from the pending list itself) in *deleted.
 */
RedisResult
stream_autoclaim(RedisConn *conn, const char *stream, const char *group,
				 const char *consumer, int min_idle_ms, char *cursor,
				 int count, StreamEntry **entries, int *nentries,
				 char ***deleted, int *ndeleted)
{
	const char *argv[8];
	char		idlebuf[16];
	char		countbuf[16];
	RedisValue *reply;
	RedisValue *list;
	RedisResult rc;
	int			i;

	*entries = NULL;
	*nentries = 0;
	*deleted = NULL;
	*ndeleted = 0;
	snprintf(idlebuf, sizeof(idlebuf), "%d", min_idle_ms);
	snprintf(countbuf, sizeof(countbuf), "%d", count);
	argv[0] = "XAUTOCLAIM";
	argv[1] = stream;
	argv[2] = group;
	argv[3] = consumer;
	argv[4] = idlebuf;
	argv[5] = cursor;
	argv[6] = "COUNT";
	argv[7] = countbuf;
	rc = redis_command_argv(conn, 8, argv, NULL, 0, &reply);
	if (rc != REDIS_OK)
		return rc;
	if (reply->type != REDIS_VALUE_ARRAY || reply->nelements < 2 ||
		reply->elements[0].type != REDIS_VALUE_STRING ||
		reply->elements[1].type != REDIS_VALUE_ARRAY)
		return REDIS_ERROR_REPLY;

	strlcpy(cursor, reply->elements[0].str, STREAM_ID_BUFLEN);
	list = &reply->elements[1];
	*entries = palloc0(sizeof(StreamEntry) * Max(list->nelements, 1));
	for (i = 0; i < list->nelements; i++)
		if (value_to_entry(&list->elements[i], &(*entries)[*nentries]))
			(*nentries)++;

	/* Redis 7 adds the ids that no longer exist in the stream */
	if (reply->nelements >= 3 && reply->elements[2].type == REDIS_VALUE_ARRAY)
	{
		list = &reply->elements[2];
		*deleted = palloc(sizeof(char *) * Max(list->nelements, 1));
		for (i = 0; i < list->nelements; i++)
			if (list->elements[i].type == REDIS_VALUE_STRING)
				(*deleted)[(*ndeleted)++] = list->elements[i].str;
	}
	return REDIS_OK;
}

/*
 * stream_touch
 *		XCLAIM stream group consumer 0 id... JUSTID: keep entries we own but
 *		cannot finish yet from looking idle, without raising their delivery
 *		counts, so that no other consumer claims them.
 */
RedisResult
stream_touch(RedisConn *conn, const char *stream, const char *group,
			 const char *consumer, char **ids, int nids)
{
	const char **argv;
	RedisValue *reply;
	int			i;

	if (nids <= 0)
		return REDIS_OK;
	argv = palloc(sizeof(char *) * (nids + 6));
	argv[0] = "XCLAIM";
	argv[1] = stream;
	argv[2] = group;
	argv[3] = consumer;
	argv[4] = "0";
	for (i = 0; i < nids; i++)
		argv[5 + i] = ids[i];
	argv[5 + nids] = "JUSTID";
	return redis_command_argv(conn, nids + 6, argv, NULL, 0, &reply);
}

/*
 * stream_first_pending
 *		The id of this consumer's first pending entry after "after" (an id,
 *		exclusive; "0" for the very first), or *id = NULL when there is none.
 */
RedisResult
stream_first_pending(RedisConn *conn, const char *stream, const char *group,
					 const char *consumer, const char *after, char **id)
{
	const char *argv[7];
	char	   *start = psprintf("(%s", after);
	RedisValue *reply;
	RedisResult rc;

	*id = NULL;
	argv[0] = "XPENDING";
	argv[1] = stream;
	argv[2] = group;
	argv[3] = strcmp(after, "0") == 0 ? "-" : start;
	argv[4] = "+";
	argv[5] = "1";
	argv[6] = consumer;
	rc = redis_command_argv(conn, 7, argv, NULL, 0, &reply);
	if (rc != REDIS_OK)
		return rc;
	if (reply->type == REDIS_VALUE_ARRAY && reply->nelements > 0 &&
		reply->elements[0].type == REDIS_VALUE_ARRAY &&
		reply->elements[0].nelements >= 1 &&
		reply->elements[0].elements[0].type == REDIS_VALUE_STRING)
		*id = reply->elements[0].elements[0].str;
	return REDIS_OK;
}

/*
 * In a reply of alternating names and values (one XINFO record), find the
 * value named name; NULL if there is none.
 */
static RedisValue *
xinfo_field(RedisValue *record, const char *name)
{
	int			i;

	if (record->type != REDIS_VALUE_ARRAY)
		return NULL;
	for (i = 0; i + 1 < record->nelements; i += 2)
		if (value_is(&record->elements[i], name))
			return &record->elements[i + 1];
	return NULL;
}

/*
 * Find the record whose "name" is name in an XINFO GROUPS or CONSUMERS
 * reply.
 */
static RedisValue *
xinfo_find(RedisValue *reply, const char *name)
{
	int			i;

	if (reply->type != REDIS_VALUE_ARRAY)
		return NULL;
	for (i = 0; i < reply->nelements; i++)
		if (value_is(xinfo_field(&reply->elements[i], "name"), name))
			return &reply->elements[i];
	return NULL;
}

/* An integer field of an XINFO record, or -1 when absent or nil. */
static int64
xinfo_integer(RedisValue *record, const char *name)
{
	RedisValue *v = record ? xinfo_field(record, name) : NULL;

	return (v != NULL && v->type == REDIS_VALUE_INTEGER) ? v->integer : -1;
}

/*
 * stream_group_info
 *		The group's lag (-1: Redis cannot say) and pending count, and this
 *		consumer's pending count, from XINFO GROUPS and XINFO CONSUMERS.
 */
RedisResult
stream_group_info(RedisConn *conn, const char *stream, const char *group,
				  const char *consumer, int64 *lag, int64 *group_pending,
				  int64 *pending)
{
	const char *groups_argv[] = {"XINFO", "GROUPS", stream};
	const char *consumers_argv[] = {"XINFO", "CONSUMERS", stream, group};
	RedisValue *groups;
	RedisValue *consumers;
	RedisValue *g;
	RedisResult rc;

	rc = redis_command_argv(conn, 3, groups_argv, NULL, 0, &groups);
	if (rc == REDIS_OK)
		rc = redis_command_argv(conn, 4, consumers_argv, NULL, 0, &consumers);
	if (rc != REDIS_OK)
		return rc;

	g = xinfo_find(groups, group);
	if (g == NULL)
		return REDIS_NOGROUP;
	*lag = xinfo_integer(g, "lag");
	*group_pending = Max(xinfo_integer(g, "pending"), 0);
	*pending = Max(xinfo_integer(xinfo_find(consumers, consumer), "pending"), 0);
	return REDIS_OK;
}
