-- bench/palace.sql — bulk-load a palace-sized graph with plain INSERTs (no extraction):
--   psql -v edges=TARGET -f bench/palace.sql
-- Grows the graph to :edges kgx-style RELATION edges (each with one support row) over
-- max(5000, :edges / 7.6) "Palace N" entities — the palace's ratio (263K entities, ~2M edges).
-- Idempotent and incremental: only what is missing is added.
SET search_path = ag_catalog, public;
SELECT greatest(5000, (:edges / 7.6)::int) AS nent \gset
SELECT coalesce(max((ag_catalog.agtype_out(properties)::text::jsonb ->> 'pn')::int), 0) AS have_ent
  FROM mempalace_kg."Entity" WHERE ag_catalog.agtype_out(properties)::text::jsonb ? 'pn' \gset
INSERT INTO mempalace_kg."Entity" (properties)
SELECT agtype_build_map('name', 'Palace ' || i, 'key', 'palace ' || i, 'pn', i)
  FROM generate_series(:have_ent + 1, :nent) i;
SELECT count(*) AS have_edges FROM public.kgx_mempalace_kg_support WHERE drawer_id LIKE 'palace:%' \gset
-- edge j: Palace a -[rel]-> Palace b, a and b spread over all entities; (a, b, rel) distinct per j
CREATE TEMP TABLE pe AS
SELECT j, 1 + (j % :nent) AS a, 1 + ((j / :nent) * 7919 + j * 13 + 1) % :nent AS b,
       (ARRAY['uses','depends_on','part_of','calls','owns','mentions','is_a','creates'])[1 + (j / :nent) % 8] AS rel
  FROM generate_series(:have_edges + 1, :edges) j;
DELETE FROM pe WHERE a = b;
CREATE TEMP TABLE pv AS
SELECT (ag_catalog.agtype_out(properties)::text::jsonb ->> 'pn')::int AS n, id FROM mempalace_kg."Entity" WHERE ag_catalog.agtype_out(properties)::text::jsonb ? 'pn';
CREATE INDEX ON pv (n);
ANALYZE pv;
CREATE TEMP TABLE pr AS
WITH ins AS (
    INSERT INTO mempalace_kg."RELATION" (start_id, end_id, properties)
    SELECT va.id, vb.id, agtype_build_map('relation_type', pe.rel, 'confidence', 0.7::float8, 'support', 1,
                                          'source', 'drawer:palace:' || pe.j)
      FROM pe JOIN pv va ON va.n = pe.a JOIN pv vb ON vb.n = pe.b
    ON CONFLICT DO NOTHING
    RETURNING id, start_id, end_id, properties)
SELECT * FROM ins;
INSERT INTO public.kgx_mempalace_kg_support (drawer_id, subject_key, relation_type, object_key, edge_id,
                                             subject, object, raw_relation_type, confidence, chunk)
SELECT substr((ag_catalog.agtype_out(pr.properties)::text::jsonb -> 'source')::text, 9, length((ag_catalog.agtype_out(pr.properties)::text::jsonb -> 'source')::text) - 9),
       'k' || pr.start_id::text, btrim((ag_catalog.agtype_out(pr.properties)::text::jsonb -> 'relation_type')::text, '"'), 'k' || pr.end_id::text, pr.id,
       's', 'o', NULL, 0.7, 0
  FROM pr;
ANALYZE mempalace_kg."Entity";
ANALYZE mempalace_kg."RELATION";
ANALYZE public.kgx_mempalace_kg_support;
