-- A CHECK (x IN (...)) of three values or more costs SQLite a temporary
-- index of the values, built and freed again each time a row is written:
-- some 18 µs of CPU a job on the wide 10,000-job graph, where a build's
-- start and its end each write its row (docs/benchmarks.md). The same
-- constraints written as comparisons mean the same and cost a few
-- comparisons. Only the text of the tables' definitions changes, no row
-- and no page of data, the way SQLite's documentation gives for changing
-- a CHECK constraint; migrate moves the schema version on after this
-- file (schemaRewrites), so that every connection reads the new text.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema SET sql = replace(sql,
	'CHECK (state IN (''WAITING'', ''RUNNING'', ''DONE''))',
	'CHECK (state = ''WAITING'' OR state = ''RUNNING'' OR state = ''DONE'')')
WHERE type = 'table' AND name = 'builds';
UPDATE sqlite_schema SET sql = replace(sql,
	'CHECK (state IN (''QUEUED'', ''ADMITTED'', ''RUNNING'', ''DONE''))',
	'CHECK (state = ''QUEUED'' OR state = ''ADMITTED'' OR state = ''RUNNING'' OR state = ''DONE'')')
WHERE type = 'table' AND name = 'buildsets';
UPDATE sqlite_schema SET sql = replace(sql,
	'CHECK (state IN (''pending'', ''delivered'', ''failed''))',
	'CHECK (state = ''pending'' OR state = ''delivered'' OR state = ''failed'')')
WHERE type = 'table' AND name = 'report_deliveries';
UPDATE sqlite_schema SET sql = replace(sql,
	'CHECK (status IN (''ok'', ''changed'', ''failed'', ''unreachable'', ''skipped''))',
	'CHECK (status = ''ok'' OR status = ''changed'' OR status = ''failed'' OR status = ''unreachable'' OR status = ''skipped'')')
WHERE type = 'table' AND name = 'host_results';
UPDATE sqlite_schema SET sql = replace(sql,
	'CHECK (state IN (''live'', ''fenced'', ''ended'', ''released''))',
	'CHECK (state = ''live'' OR state = ''fenced'' OR state = ''ended'' OR state = ''released'')')
WHERE type = 'table' AND name = 'owners';
PRAGMA writable_schema = OFF;
