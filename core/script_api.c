/* script_api — the one `kgx` table policies see (see script.h for its contract). Built once per
 * load; every function here runs on the thread that owns the state. */
#include "script_int.h"
#include "log.h"
#include "status.h"
#include "utf8.h"

#include <string.h>

static int api_log(lua_State *L)
{
    script_vm_t *s = lua_touserdata(L, lua_upvalueindex(1));
    const char *lv = luaL_checkstring(L, 1);
    int level = kgx_log_level_parse(lv);
    if (level < 0) return luaL_error(L, "kgx.log: unknown level '%s' (debug|info|warn|error)", lv);
    script_plain_tostring(L, 2);
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    if (level <= kgx_log_get_level()) script_log_policy(s, level, msg, len);
    return 0;
}

static int api_tokens(lua_State *L)
{
    size_t n;
    luaL_checklstring(L, 1, &n);
    lua_pushnumber(L, (lua_Number)((n + 2) / 3));
    return 1;
}

/* kgx.budget(n_ctx, instruction_tokens, output_cap) -> tiny: what one request leaves for drawer text,
 * reported to the host (status: process.budget, --status; one warning per tiny budget). */
static int api_budget(lua_State *L)
{
    lua_Number n = luaL_checknumber(L, 1), i = luaL_checknumber(L, 2), c = luaL_checknumber(L, 3);
    int ok = n > 0 && n < 1 << 28 && i >= 0 && i < 1 << 28 && c >= 0 && c < 1 << 28;
    lua_pushboolean(L, ok && kgx_status_note_budget((int)n, (int)i, (int)c));
    return 1;
}

static int api_utf8_valid(lua_State *L)
{
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    lua_pushboolean(L, kgx_utf8_valid(p, n));
    return 1;
}

/* kgx.json.decode(s) -> value | nil, err. Bad JSON never raises; a non-string argument does. */
static int api_json_decode(lua_State *L)
{
    luaL_checkstring(L, 1);
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);                       /* stack: decode s */
    if (lua_pcall(L, 1, 1, 0) != 0) {
        lua_pushnil(L);
        lua_insert(L, -2);                  /* stack: nil err */
        return 2;
    }
    return 1;
}

/* Builds this load's kgx table (the one place the Lua API is defined). stack: -> kgx */
void script_push_kgx_api(script_vm_t *s)
{
    lua_State *L = s->L;
    const script_conf_t *c = s->conf;
    lua_newtable(L);                                        /* stack: kgx */
    lua_newtable(L);                                        /* stack: kgx json */
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->cj_encode);
    lua_setfield(L, -2, "encode");
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->cj_decode);
    lua_pushcclosure(L, api_json_decode, 1);
    lua_setfield(L, -2, "decode");
    lua_pushlightuserdata(L, NULL);                         /* cjson.null */
    lua_setfield(L, -2, "null");
    lua_setfield(L, -2, "json");                            /* stack: kgx */
    lua_pushlightuserdata(L, s);
    lua_pushcclosure(L, api_log, 1);
    lua_setfield(L, -2, "log");
    lua_pushcfunction(L, api_tokens);
    lua_setfield(L, -2, "tokens");
    lua_pushcfunction(L, api_utf8_valid);
    lua_setfield(L, -2, "utf8_valid");
    lua_pushcfunction(L, api_budget);
    lua_setfield(L, -2, "budget");
    lua_newtable(L);                                        /* stack: kgx config */
    lua_pushstring(L, c->model ? c->model : "");
    lua_setfield(L, -2, "model");
    lua_pushinteger(L, s->n_ctx);
    lua_setfield(L, -2, "n_ctx");
    lua_pushnumber(L, c->min_confidence);
    lua_setfield(L, -2, "min_confidence");
    lua_pushinteger(L, c->max_triples);
    lua_setfield(L, -2, "max_triples");
    lua_pushstring(L, c->policy_dir);
    lua_setfield(L, -2, "policy_dir");
    lua_pushstring(L, c->plugins_dir);
    lua_setfield(L, -2, "plugins_dir");
    lua_setfield(L, -2, "config");                          /* stack: kgx */
}

/* kgx.config.n_ctx of the loaded policy follows the server's per-slot context. */
void script_api_set_n_ctx(script_vm_t *s, int n_ctx)
{
    s->n_ctx = n_ctx > 0 ? n_ctx : 0;
    lua_State *L = s->L;
    if (s->pol.kgx == LUA_NOREF) return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->pol.kgx);          /* stack: kgx */
    if (lua_istable(L, -1)) {
        script_rawfield(L, -1, "config");                   /* stack: kgx config */
        if (lua_istable(L, -1)) {
            lua_pushstring(L, "n_ctx");
            lua_pushinteger(L, s->n_ctx);
            lua_rawset(L, -3);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}
