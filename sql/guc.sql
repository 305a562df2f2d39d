--
-- guc.sql: processor.* settings are checked by PostgreSQL's GUC machinery
-- (SPEC §2, §7).  The table GUCs accept only a table name, optionally
-- schema-qualified, quoting allowed: the check hook refuses anything else,
-- so that a value can never carry SQL.  processor.group_start_id accepts
-- "$" or a stream id.  Values are tried with ALTER SYSTEM, which runs the
-- check hooks without reloading anything; every accepted value is reset.
--
-- Needs processor preloaded (test/regress.conf), not the extension.
--

-- The reloadable settings cannot be changed for one session.
SHOW processor.batch_size;
SET processor.batch_size = 10;
SHOW processor.target_table;
SHOW processor.dead_letter_table;
SHOW processor.group_start_id;

-- What ALTER SYSTEM has written to postgresql.auto.conf.
CREATE FUNCTION pg_temp.auto_conf()
RETURNS TABLE (name text, setting text)
LANGUAGE sql AS $$
	SELECT name, setting FROM pg_file_settings
	 WHERE sourcefile LIKE '%postgresql.auto.conf' AND name LIKE 'processor.%'
	 ORDER BY seqno
$$;

--
-- processor.target_table
--
ALTER SYSTEM SET processor.target_table = 'a.b.c';
ALTER SYSTEM SET processor.target_table = 'positions; DROP TABLE x; --';
ALTER SYSTEM SET processor.target_table = 'public.positions; DROP TABLE x';
ALTER SYSTEM SET processor.target_table = '"unterminated';
ALTER SYSTEM SET processor.target_table = 'public.';
ALTER SYSTEM SET processor.target_table = '';
SELECT * FROM pg_temp.auto_conf();
-- accepted: quoted identifiers, one or two of them
ALTER SYSTEM SET processor.target_table = '"My Schema"."Pos"';
SELECT * FROM pg_temp.auto_conf();
ALTER SYSTEM SET processor.target_table = 'positions2';
SELECT * FROM pg_temp.auto_conf();
ALTER SYSTEM RESET processor.target_table;
SELECT * FROM pg_temp.auto_conf();

--
-- processor.dead_letter_table
--
ALTER SYSTEM SET processor.dead_letter_table = 'a.b.c';
ALTER SYSTEM SET processor.dead_letter_table = 'dead; DROP TABLE x; --';
ALTER SYSTEM SET processor.dead_letter_table = '';
SELECT * FROM pg_temp.auto_conf();
ALTER SYSTEM SET processor.dead_letter_table = '"My Schema"."Dead Letters"';
SELECT * FROM pg_temp.auto_conf();
ALTER SYSTEM RESET processor.dead_letter_table;
SELECT * FROM pg_temp.auto_conf();

--
-- processor.group_start_id
--
ALTER SYSTEM SET processor.group_start_id = 'abc';
ALTER SYSTEM SET processor.group_start_id = '1-';
ALTER SYSTEM SET processor.group_start_id = '-1';
ALTER SYSTEM SET processor.group_start_id = '';
SELECT * FROM pg_temp.auto_conf();
ALTER SYSTEM SET processor.group_start_id = '$';
SELECT * FROM pg_temp.auto_conf();
ALTER SYSTEM SET processor.group_start_id = '0-1';
SELECT * FROM pg_temp.auto_conf();
ALTER SYSTEM SET processor.group_start_id = '1764151200123';
SELECT * FROM pg_temp.auto_conf();
ALTER SYSTEM RESET processor.group_start_id;
SELECT * FROM pg_temp.auto_conf();

--
-- Other settings: PostgreSQL's own errors for empty names, ranges, units.
--
ALTER SYSTEM SET processor.stream = '';
ALTER SYSTEM SET processor."group" = '';
ALTER SYSTEM SET processor.block_time = 0;
ALTER SYSTEM SET processor.batch_size = 0;
ALTER SYSTEM SET processor.redis_port = 70000;
ALTER SYSTEM SET processor.retry_max = '1 fortnight';
-- "processor" is a reserved prefix: a misspelled setting is an error
ALTER SYSTEM SET processor.no_such_setting = 1;
SET processor.no_such_setting = 1;
SELECT * FROM pg_temp.auto_conf();

-- Nothing left behind for later tests.
SELECT count(*) FROM pg_file_settings
 WHERE sourcefile LIKE '%postgresql.auto.conf';
SHOW processor.batch_size;
