-- bench/drawers.sql — synthetic drawers for the benchmarks (psql -v n=N -v off=OFFSET -v pool=ENTITIES).
-- Each drawer holds 5 fact sentences the fake llama-server turns into 5 triples (tests/fake/GRAMMAR.md).
-- Subjects come from a shared pool of :pool entities ("Entity N"); the object and predicate are a
-- function of (subject, sentence number), so the same fact recurs across drawers (edges get support > 1)
-- and the expected graph can be computed in SQL (bench_expected below).
CREATE TABLE IF NOT EXISTS public.mempalace_drawers (
    id text PRIMARY KEY, wing text, room text, document text NOT NULL, metadata jsonb);
CREATE TABLE IF NOT EXISTS public.bench_triples (
    drawer_id text, k int, s text, p text, o text, PRIMARY KEY (drawer_id, k));

INSERT INTO public.bench_triples
SELECT 'b' || lpad(i::text, 8, '0'), k, 'Entity ' || a,
       (ARRAY['uses','depends_on','works_on','owns','calls'])[k],
       'Entity ' || ((a * 31 + k * 7 + 1) % :pool)
  FROM (SELECT i, k, abs(hashint4(i * 8 + k)) % :pool AS a
          FROM generate_series(:off + 1, :off + :n) i, generate_series(1, 5) k) x
 WHERE a <> (a * 31 + k * 7 + 1) % :pool
ON CONFLICT DO NOTHING;

INSERT INTO public.mempalace_drawers (id, wing, room, document, metadata)
SELECT t.drawer_id, 'wing_bench', 'room_' || (right(t.drawer_id, 2)),
       string_agg(format('%s %s %s.', t.s,
                         CASE t.p WHEN 'uses' THEN 'uses' WHEN 'depends_on' THEN 'depends on'
                                  WHEN 'works_on' THEN 'works on' WHEN 'owns' THEN 'owns' ELSE 'calls' END,
                         t.o), ' ' ORDER BY t.k),
       '{"source_file":"bench"}'::jsonb
  FROM public.bench_triples t
 WHERE t.drawer_id > 'b' || lpad(:off::text, 8, '0') AND t.drawer_id <= 'b' || lpad((:off + :n)::text, 8, '0')
 GROUP BY t.drawer_id
ON CONFLICT DO NOTHING;
