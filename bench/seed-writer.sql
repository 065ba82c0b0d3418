-- bench/seed-writer.sql — emits the seed's graph writes for bench_triples rows of drawers in
-- (:'lo', :'hi']: one Cypher statement per triple (MERGE subject, MERGE object, CREATE edge), values
-- spliced into the Cypher text with quote escaping inside a $kg$ dollar quote, as the Python worker
-- does. Run:  psql -At -v lo=.. -v hi=.. -f bench/seed-writer.sql DSN > seed.sql ; psql -f seed.sql DSN
SELECT 'LOAD ''age''; SET search_path = ag_catalog, "$user", public;';
SELECT format($f$SELECT * FROM cypher('mempalace_kg', $kg$ MERGE (s:Entity {name: '%s'}) MERGE (o:Entity {name: '%s'}) CREATE (s)-[:RELATION {relation_type: '%s', confidence: 0.7, source: 'drawer:%s'}]->(o) $kg$) AS (r agtype);$f$,
              replace(replace(s, '\', '\\'), '''', '\'''), replace(replace(o, '\', '\\'), '''', '\'''),
              replace(replace(p, '\', '\\'), '''', '\'''), drawer_id)
  FROM public.bench_triples WHERE drawer_id > :'lo' AND drawer_id <= :'hi' ORDER BY drawer_id, k;
