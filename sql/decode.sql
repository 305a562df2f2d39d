--
-- processor.decode: the wire contract of SPEC §1, both encodings, every
-- accepted form and every rejection rule with its exact message.
--
CREATE EXTENSION processor;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

-- err(): the catalogue message of an invalid entry (SQLSTATE 22023), or
-- 'ok'.  Any other error still surfaces as an ERROR and fails the test.
CREATE FUNCTION pg_temp.err(payload text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM processor.decode(payload);
	RETURN 'ok';
EXCEPTION WHEN invalid_parameter_value THEN
	RETURN SQLERRM;
END $$;
CREATE FUNCTION pg_temp.err(fields jsonb) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM processor.decode(fields);
	RETURN 'ok';
EXCEPTION WHEN invalid_parameter_value THEN
	RETURN SQLERRM;
END $$;

-- A valid JSON payload; extra (",key:value...") adds keys or replaces the
-- required ones, as text, so that any JSON can be tried.
CREATE FUNCTION pg_temp.pos(extra text) RETURNS text
LANGUAGE sql AS $$
	SELECT '{' || concat_ws(',',
		CASE WHEN extra !~ '"device_id":' THEN '"device_id":"dev-1"' END,
		CASE WHEN extra !~ '"ts":' THEN '"ts":"2026-11-26T10:00:00Z"' END,
		CASE WHEN extra !~ '"lat":' THEN '"lat":52.1' END,
		CASE WHEN extra !~ '"lon":' THEN '"lon":4.9' END,
		nullif(ltrim(extra, ','), '')) || '}'
$$;
CREATE FUNCTION pg_temp.flat(extra jsonb) RETURNS jsonb
LANGUAGE sql AS $$
	SELECT '{"device_id":"dev-1","ts":"1764151200123","lat":"52.1","lon":"4.9"}'::jsonb
		|| extra
$$;

--
-- The JSON encoding: the example of the spec, every column.
--
\x on
SELECT * FROM processor.decode('{"device_id":"356307042441013","ts":"2026-11-26T10:00:00.123Z","lat":52.37012,"lon":4.89045,"altitude":12.5,"speed":43.2,"heading":271,"satellites":11,"priority":0,"attributes":{"239":1,"16":"123456789012345678901","78":{"type":"Buffer","data":[1,2,3,4]}}}');
\x off

-- The same through decode(jsonb) with a payload field (other fields ignored).
SELECT device_id, ts, lat, attributes
  FROM processor.decode(jsonb_build_object(
	'payload', '{"device_id":"d","ts":1764151200123,"lat":1,"lon":2,"attributes":{"a":1}}',
	'device_id', 'ignored', 'lat', 'not a number'));

--
-- The flat encoding: the example of the spec; absent optionals are NULL.
--
SELECT * FROM processor.decode('{"device_id":"356307042441013","ts":"1764151200123","lat":"52.37012","lon":"4.89045","speed":"43.2"}'::jsonb);
SELECT device_id, ts, altitude, heading, satellites, priority, attributes
  FROM processor.decode(pg_temp.flat('{"ts":"2026-11-26T10:00:00+02:00","altitude":"-12.5","heading":"0","satellites":"11.0","priority":"255","attributes":"{\"a\":[1,{\"type\":\"Buffer\",\"data\":[104,105]}]}"}'));
-- decode(jsonb) also takes non-string values, as their JSON text
SELECT lat, lon, attributes
  FROM processor.decode(pg_temp.flat('{"lat":-90,"lon":180,"attributes":{"k":true}}'));

--
-- ts: ISO-8601 with Z or +-hh:mm (fractions kept to the microsecond), or
-- integer epoch milliseconds; always an explicit instant.
--
SELECT v AS ts_in, (SELECT ts FROM processor.decode(pg_temp.pos(',"ts":' || v))) AS ts
  FROM (VALUES ('"2026-11-26T10:00:00Z"'),
			   ('"2026-11-26T10:00:00.123Z"'),
			   ('"2026-11-26T10:00:00.123456Z"'),
			   ('"2026-11-26T12:00:00+02:00"'),
			   ('"2026-11-26T05:30:00-04:30"'),
			   ('"2026-11-26T12:00:00+0200"'),
			   ('"2026-11-26t10:00:00z"'),
			   ('"2026-11-26 10:00Z"'),
			   ('1764151200123'),
			   ('1764151200123.0'),
			   ('0'),
			   ('-1')) AS t(v);
SELECT ts = '2026-11-26T10:00:00.123Z'::timestamptz AS exact_ms,
	   extract(epoch FROM ts) * 1000 AS epoch_ms
  FROM processor.decode(pg_temp.pos(',"ts":"2026-11-26T10:00:00.123Z"'));
SELECT (SELECT ts FROM processor.decode(pg_temp.pos(',"ts":1764151200123')))
	 = (SELECT ts FROM processor.decode(pg_temp.pos(',"ts":"2025-11-26T10:00:00.123Z"'))) AS epoch_equals_iso;
SELECT ts FROM processor.decode(pg_temp.flat('{"ts":"2026-11-26T10:00:00.5-01:00"}'));
SELECT v AS ts_in, pg_temp.err(pg_temp.pos(',"ts":' || v)) AS message
  FROM (VALUES ('"2026-11-26T10:00:00"'),
			   ('"2026-11-26T10:00:00.123"'),
			   ('"2026-11-26"'),
			   ('"2026-02-30T10:00:00Z"'),
			   ('"2026-11-26T24:00:01Z"'),
			   ('"2026-11-26T10:00:00+16:00"'),
			   ('"2026-11-26T10:00:00 Europe/Amsterdam"'),
			   ('"now"'),
			   ('"infinity"'),
			   ('"1764151200123"'),
			   ('1764151200123.5'),
			   ('9223372036854775807'),
			   ('1e999'),
			   ('true'),
			   ('{}')) AS t(v);
-- epoch milliseconds at the edges of timestamptz's range (4714 BC to 294276)
SELECT v, pg_temp.err(pg_temp.pos(',"ts":' || v)) AS outcome,
	   CASE WHEN pg_temp.err(pg_temp.pos(',"ts":' || v)) = 'ok' THEN
		 (SELECT extract(epoch FROM ts) * 1000
			FROM processor.decode(pg_temp.pos(',"ts":' || v))) END AS epoch_ms
  FROM (VALUES ('-210866803200001'), ('-210866803200000'),
			   ('9223372036854775'), ('9223372036854776'),
			   ('9224318015999999'), ('9224318016000000')) AS t(v);
SELECT pg_temp.err(pg_temp.flat('{"ts":"2026-11-26T10:00:00"}')) AS flat_no_zone,
	   pg_temp.err(pg_temp.flat('{"ts":"12.5"}')) AS flat_fraction,
	   pg_temp.err(pg_temp.flat('{"ts":"yesterday"}')) AS flat_word;

--
-- Required keys: absent, JSON null, or an empty flat value.
--
SELECT pg_temp.err('{"ts":1,"lat":1,"lon":1}'::text) AS no_device_id,
	   pg_temp.err('{"device_id":"d","lat":1,"lon":1}'::text) AS no_ts,
	   pg_temp.err('{"device_id":"d","ts":1,"lon":1}'::text) AS no_lat,
	   pg_temp.err('{"device_id":"d","ts":1,"lat":1}'::text) AS no_lon;
SELECT pg_temp.err('{"device_id":null,"ts":1,"lat":1,"lon":1}'::text) AS null_device_id,
	   pg_temp.err('{"device_id":"d","ts":null,"lat":1,"lon":1}'::text) AS null_ts,
	   pg_temp.err('{"device_id":"d","ts":1,"lat":null,"lon":1}'::text) AS null_lat,
	   pg_temp.err('{"device_id":"d","ts":1,"lat":1,"lon":null}'::text) AS null_lon;
SELECT pg_temp.err('{"device_id":"","ts":"1","lat":"1","lon":"1"}'::jsonb) AS empty_device_id,
	   pg_temp.err(pg_temp.flat('{"ts":""}')) AS empty_ts,
	   pg_temp.err(pg_temp.flat('{"lat":""}')) AS empty_lat,
	   pg_temp.err('{"device_id":"d","ts":"1","lat":"1"}'::jsonb) AS no_lon;

--
-- Optional keys: JSON null and empty flat values are absent (NULL);
-- unknown keys are ignored in both encodings.
--
SELECT altitude, speed, heading, satellites, priority, attributes
  FROM processor.decode(pg_temp.pos(',"altitude":null,"speed":null,"heading":null,"satellites":null,"priority":null,"attributes":null,"unknown":{"x":[1,2,{"y":null}]},"Lat":"x"'));
SELECT altitude, speed, heading, satellites, priority, attributes
  FROM processor.decode(pg_temp.flat('{"altitude":"","speed":"","heading":"","satellites":"","priority":"","attributes":"","unknown":"x","LAT":"y"}'));
SELECT attributes FROM processor.decode(pg_temp.flat('{"attributes":"null"}'));

--
-- Numbers: ranges and their boundaries.
--
SELECT v AS field, pg_temp.err(pg_temp.pos(',' || v)) AS message
  FROM (VALUES ('"lat":90'), ('"lat":-90'), ('"lat":90.0001'), ('"lat":-90.0001'),
			   ('"lon":180'), ('"lon":-180'), ('"lon":180.0001'), ('"lon":-180.5'),
			   ('"altitude":-1e300'), ('"altitude":1e308'),
			   ('"speed":0'), ('"speed":-0.1'), ('"speed":1e300'),
			   ('"heading":0'), ('"heading":360'), ('"heading":360.1'), ('"heading":-1'),
			   ('"satellites":0'), ('"satellites":255'), ('"satellites":256'), ('"satellites":-1'),
			   ('"satellites":11.0'), ('"satellites":11.5'), ('"satellites":1e1'),
			   ('"priority":0'), ('"priority":255'), ('"priority":256'), ('"priority":-1'),
			   ('"priority":0.5')) AS t(v);
SELECT satellites, priority FROM processor.decode(pg_temp.pos(',"satellites":11.0,"priority":2e0'));

-- Not numbers: quoted numbers, booleans, containers; NaN, Infinity and
-- overflow are rejected in both encodings.
SELECT v AS field, pg_temp.err(pg_temp.pos(',' || v)) AS message
  FROM (VALUES ('"lat":"52.1"'), ('"lon":true'), ('"altitude":[1]'), ('"speed":{"v":1}'),
			   ('"heading":"90"'), ('"satellites":"11"'), ('"priority":false'),
			   ('"lat":1e999'), ('"lon":-1e999'), ('"altitude":1e-999'),
			   ('"lat":NaN'), ('"lat":Infinity'), ('"lat":-Infinity')) AS t(v);
SELECT v AS flat_value, pg_temp.err(pg_temp.flat(jsonb_build_object('lat', v))) AS message
  FROM (VALUES ('NaN'), ('Infinity'), ('-Infinity'), ('inf'), ('1e999'), ('0x10'),
			   (' 52.1'), ('52.1 '), ('+52.1'), ('.5'), ('52,1'), ('abc'), ('52.'),
			   ('5e1'), ('-0')) AS t(v);
SELECT pg_temp.err(pg_temp.flat('{"satellites":"11.5"}')) AS flat_fraction,
	   pg_temp.err(pg_temp.flat('{"satellites":"11.0"}')) AS flat_integral;

--
-- device_id: 1..64 bytes, a string, no control characters.
--
SELECT length(device_id) FROM processor.decode(pg_temp.pos(',"device_id":"' || repeat('x', 64) || '"'));
SELECT octet_length(device_id) FROM processor.decode(pg_temp.pos(',"device_id":"' || repeat('é', 32) || '"'));
SELECT pg_temp.err(pg_temp.pos(',"device_id":"' || repeat('x', 65) || '"')) AS too_long,
	   pg_temp.err(pg_temp.pos(',"device_id":"' || repeat('é', 32) || 'x"')) AS too_long_bytes;
SELECT pg_temp.err(pg_temp.flat(jsonb_build_object('device_id', repeat('d', 65)))) AS flat_too_long;
SELECT v AS device_id, pg_temp.err(pg_temp.pos(',"device_id":' || v)) AS message
  FROM (VALUES ('"a\u0001b"'), ('"a\nb"'), ('"a\u001fb"'), ('"a\u007fb"'), ('"tab\t"'),
			   ('""'), ('356307042441013'), ('true'), ('["a"]'), ('{"id":"a"}'),
			   ('"\u0080ok"'), ('"ok é 😀"')) AS t(v);
SELECT pg_temp.err(pg_temp.flat(jsonb_build_object('device_id', E'a\tb'))) AS flat_control;
-- Invalid UTF-8 (device_id, payload, attributes) cannot travel through text
-- or jsonb arguments: the database refuses it first.  Those rules are
-- reached only by entries read from Redis.

--
-- attributes: an object, stored as it arrives (jsonb rules), except Buffer.
--
SELECT attributes FROM processor.decode(pg_temp.pos(',"attributes":{"big":123456789012345678901,"str":"123456789012345678901","neg":-0.000120,"exp":1.5E+3,"t":true,"n":null,"s":"a\"b\\c\u00e9","e":{},"l":[]}'));
SELECT attributes->'big' = '123456789012345678901'::jsonb AS big_exact,
	   jsonb_typeof(attributes->'str') AS str_type
  FROM processor.decode(pg_temp.pos(',"attributes":{"big":123456789012345678901,"str":"123456789012345678901"}'));
-- integers take a shortcut (int64_to_numeric up to 18 digits): the same
-- numbers as numeric_in gives, at the edges of the shortcut too
SELECT attributes::text = jsonb_build_object(
		'z', '0'::numeric, 'nz', '-0'::numeric, 'one', '-1'::numeric,
		'd18', '999999999999999999'::numeric,
		'n18', '-999999999999999999'::numeric,
		'd19', '1000000000000000000'::numeric,
		'd20', '99999999999999999999'::numeric)::text AS same_as_numeric_in,
	   attributes->>'nz' AS minus_zero, attributes->>'d19' AS d19
  FROM processor.decode(pg_temp.pos(',"attributes":{"z":0,"nz":-0,"one":-1,"d18":999999999999999999,"n18":-999999999999999999,"d19":1000000000000000000,"d20":99999999999999999999}'));
-- a duplicate key inside attributes: the last one wins
SELECT attributes FROM processor.decode(pg_temp.pos(',"attributes":{"a":1,"b":2,"a":3,"c":{"x":1,"x":{"y":2}}}'));
SELECT attributes FROM processor.decode(pg_temp.flat('{"attributes":"{\"a\":1,\"a\":2}"}'));
-- Buffer -> base64, at any depth, in objects and in arrays
SELECT attributes FROM processor.decode(pg_temp.pos(',"attributes":{"top":{"type":"Buffer","data":[1,2,3,4]},"swapped":{"data":[255,254],"type":"Buffer"},"empty":{"type":"Buffer","data":[]},"arr":[{"type":"Buffer","data":[104,105]},[{"type":"Buffer","data":[0]}]],"deep":{"a":{"b":[1,{"c":{"type":"Buffer","data":[72,101,108,108,111]}}]}}}'));
-- anything but exactly that shape stays as it is
SELECT attributes FROM processor.decode(pg_temp.pos(',"attributes":{"extra":{"type":"Buffer","data":[1],"x":1},"lower":{"type":"buffer","data":[1]},"big":{"type":"Buffer","data":[256]},"neg":{"type":"Buffer","data":[-1]},"frac":{"type":"Buffer","data":[1.0]},"str":{"type":"Buffer","data":"AQ=="},"nested":{"type":"Buffer","data":[[1]]},"elem":{"type":"Buffer","data":["1"]},"only":{"type":"Buffer"},"twice":{"type":"Buffer","type":"Buffer","data":[1]}}'));
-- the attributes object itself is never replaced
SELECT attributes FROM processor.decode(pg_temp.pos(',"attributes":{"type":"Buffer","data":[1]}'));
-- not an object
SELECT v AS attributes, pg_temp.err(pg_temp.pos(',"attributes":' || v)) AS message
  FROM (VALUES ('[1,2]'), ('"{}"'), ('1'), ('true')) AS t(v);
SELECT v AS flat_attributes, pg_temp.err(pg_temp.flat(jsonb_build_object('attributes', v))) AS message
  FROM (VALUES ('[1,2]'), ('"x"'), ('1'), ('{"a":'), ('{"a":1}}'), ('{a:1}'), ('{"a":1e999999}')) AS t(v);
-- numbers that numeric cannot hold are refused, not raised
SELECT pg_temp.err(pg_temp.pos(',"attributes":{"a":1e999999}')) AS huge_exponent,
	   pg_temp.err(pg_temp.pos(',"attributes":{"a":1e-999999}')) AS tiny_exponent,
	   pg_temp.err(pg_temp.pos(',"attributes":{"a":' || repeat('9', 131001) || '}')) AS many_digits;
SELECT length(attributes->>'a') FROM processor.decode(pg_temp.pos(',"attributes":{"a":1e999}'));

--
-- Nesting: attributes itself is level 1; 64 levels pass, 65 do not.
--
SELECT attributes #> array_fill('k'::text, ARRAY[63]) AS level_64
  FROM processor.decode(pg_temp.pos(',"attributes":' || repeat('{"k":', 63) || '{"end":1}' || repeat('}', 63)));
SELECT pg_temp.err(pg_temp.pos(',"attributes":' || repeat('{"k":', 64) || '{"end":1}' || repeat('}', 64))) AS objects_65;
SELECT jsonb_typeof(attributes->'k') AS arrays_64
  FROM processor.decode(pg_temp.pos(',"attributes":{"k":' || repeat('[', 63) || repeat(']', 63) || '}'));
SELECT pg_temp.err(pg_temp.pos(',"attributes":{"k":' || repeat('[', 64) || repeat(']', 64) || '}')) AS arrays_65;
SELECT pg_temp.err(pg_temp.flat(jsonb_build_object('attributes', repeat('{"k":', 65) || '1' || repeat('}', 65)))) AS flat_65;
-- the rules before attributes are still reported first
SELECT pg_temp.err('{"lat":1,"lon":1,"attributes":' || repeat('{"k":', 70) || '1' || repeat('}', 70) || ',"ts":1}') AS deep_and_no_device_id;
-- very deep documents never reach the stack limit
SELECT pg_temp.err(pg_temp.pos(',"attributes":{"k":' || repeat('[', 100000) || repeat(']', 100000) || '}')) AS attributes_100000,
	   pg_temp.err(pg_temp.pos(',"other":' || repeat('[', 100000) || repeat(']', 100000))) AS other_100000,
	   pg_temp.err(repeat('{"a":', 100000) || '1' || repeat('}', 100000)) AS payload_100000;
SELECT pg_temp.err(pg_temp.flat(jsonb_build_object('attributes', '{"a":' || repeat('[', 100000) || repeat(']', 100000) || '}'))) AS flat_100000;
-- unknown keys may nest as deep as the document allows (256 levels)
SELECT device_id FROM processor.decode(pg_temp.pos(',"other":' || repeat('[', 255) || repeat(']', 255)));

--
-- The payload as a whole.
--
SELECT v AS payload, pg_temp.err(v) AS message
  FROM (VALUES (''), ('   '), ('[1,2]'), ('[]'), ('"text"'), ('42'), ('null'),
			   ('{"device_id":"d"'), ('{"device_id":"d",}'), ('{"device_id":d}'),
			   ('{"device_id":"d"} x'), ('{''device_id'':"d"}'), ('{"a":"\u0000"}'),
			   ('{"a":"\x"}'), ('{}')) AS t(v);
-- a duplicate top-level key, known or not, makes the entry invalid
SELECT pg_temp.err('{"device_id":"d","ts":1,"lat":1,"lon":1,"lat":2}'::text) AS dup_lat,
	   pg_temp.err(pg_temp.pos(',"x":1,"x":2')) AS dup_unknown,
	   pg_temp.err(pg_temp.pos(',"attributes":{},"attributes":{}')) AS dup_attributes,
	   pg_temp.err('{"device_id":"d","device_id":"d"}'::text) AS dup_first;
-- neither shape
SELECT pg_temp.err('{}'::jsonb) AS empty_entry,
	   pg_temp.err('{"lat":"1","ts":"1"}'::jsonb) AS no_device_id_field,
	   pg_temp.err('{"Payload":"{}","Device_id":"x"}'::jsonb) AS case_matters;
-- decode(jsonb) wants an object of fields
SELECT * FROM processor.decode('[1]'::jsonb);
SELECT * FROM processor.decode('"x"'::jsonb);

--
-- Messages echo at most 64 bytes of a value, cut on a character boundary.
--
SELECT pg_temp.err(pg_temp.pos(',"lat":"' || repeat('x', 62) || '"')) AS echo_64,
	   pg_temp.err(pg_temp.pos(',"lat":"' || repeat('x', 63) || '"')) AS echo_65;
SELECT pg_temp.err(pg_temp.pos(',"lat":"' || repeat('é', 40) || '"')) AS echo_multibyte;
SELECT octet_length(pg_temp.err(pg_temp.pos(',"lat":"' || repeat('é', 40) || '"'))) AS message_bytes;
SELECT pg_temp.err(pg_temp.flat(jsonb_build_object('lat', repeat('€', 30)))) AS flat_echo;
SELECT pg_temp.err('{"device_id":"d","ts":' || repeat('t', 1000) || '}') AS json_token_echo;
SELECT pg_temp.err(pg_temp.pos(',"attributes":{"a":1' || repeat('0', 200) || 'e999999}')) AS number_echo;

--
-- The first failing rule, in table order, is the one reported.
--
SELECT v AS payload, pg_temp.err(v) AS message
  FROM (VALUES ('{"device_id":"","ts":"x","lat":100,"lon":200}'),
			   ('{"device_id":"d","ts":"x","lat":100,"lon":200}'),
			   ('{"device_id":"d","ts":1,"lat":100,"lon":200}'),
			   ('{"device_id":"d","ts":1,"lat":1,"lon":200,"altitude":"x"}'),
			   ('{"device_id":"d","ts":1,"lat":1,"lon":1,"altitude":"x","speed":-1}'),
			   ('{"device_id":"d","ts":1,"lat":1,"lon":1,"speed":-1,"heading":-1}'),
			   ('{"device_id":"d","ts":1,"lat":1,"lon":1,"heading":-1,"satellites":-1}'),
			   ('{"device_id":"d","ts":1,"lat":1,"lon":1,"satellites":-1,"priority":-1}'),
			   ('{"device_id":"d","ts":1,"lat":1,"lon":1,"priority":-1,"attributes":[]}'),
			   ('{"attributes":[],"priority":-1,"satellites":-1,"heading":-1,"speed":-1,"altitude":"x","lon":200,"lat":100,"ts":"x","device_id":1}')) AS t(v);
SELECT pg_temp.err('{"device_id":"d","ts":"x","lat":"y","lon":"z"}'::jsonb) AS flat_order;

--
-- Entry size = the sum of its field and value lengths; over
-- processor.max_entry_bytes (1 MB here) the entry is invalid, whatever
-- else is wrong with it.
--
SHOW processor.max_entry_bytes;
-- {"payload": ...}: 7 bytes of name + the payload
SELECT device_id, octet_length(attributes->>'pad') AS pad
  FROM processor.decode(pg_temp.pos(',"attributes":{"pad":"' || repeat('x', 1048576 - 7 - octet_length(pg_temp.pos(',"attributes":{"pad":""}'))) || '"}'));
SELECT pg_temp.err(pg_temp.pos(',"attributes":{"pad":"' || repeat('x', 1048576 - 7 + 1 - octet_length(pg_temp.pos(',"attributes":{"pad":""}'))) || '"}')) AS one_byte_over;
SELECT pg_temp.err('{' || repeat(' ', 2000000) || '}') AS broken_and_too_large;
SELECT pg_temp.err(pg_temp.flat(jsonb_build_object('unknown', repeat('x', 1048576)))) AS flat_too_large;
