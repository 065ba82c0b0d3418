-- bench/kgx-writer.sql — emits kgx's graph writes for the same drawers: one call of the write function
-- per drawer (triples as one jsonb bind value), after marking the drawers' queue rows completed (the
-- --reapply entry of kgx_mempalace_kg_write, p_token NULL, takes the same write path as the daemon).
SELECT format('INSERT INTO public.mempalace_kg_extraction_queue (drawer_id, wing, room, completed_at) SELECT DISTINCT drawer_id, ''w'', ''r'', now() FROM public.bench_triples WHERE drawer_id > %L AND drawer_id <= %L ON CONFLICT (drawer_id) DO UPDATE SET completed_at = now();', :'lo', :'hi');
SELECT format('SELECT public.kgx_mempalace_kg_write(%L, ''bench'', NULL, %L::jsonb, NULL);', drawer_id,
              jsonb_agg(jsonb_build_object('s', s, 'p', p, 'o', o, 'c', 0.7, 'raw', p, 'chunk', 0) ORDER BY k))
  FROM public.bench_triples WHERE drawer_id > :'lo' AND drawer_id <= :'hi' GROUP BY drawer_id ORDER BY drawer_id;
