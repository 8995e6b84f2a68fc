/*
 * appraisal.h - what the key broker decides about verified evidence:
 *
 *  1. Appraisal (pol_appraise): the normalized claims of ev_ops.verify()
 *     (docs/claims.md) against the operator's reference values per TEE:
 *     accepted measurements and PCRs, minimum TCB, allowed TCB statuses,
 *     debug forbidden, allowed host_data / init_data digests (the container
 *     policy hashes), optional allowed platform (chip) ids. `sim` is refused
 *     unless its entry says "allow_insecure": true. The result is an EAR
 *     status: affirming, warning (every configured check passed, but the
 *     workload's code is not pinned by any measurement) or contraindicated
 *     (a check failed; the reason names it).
 *  2. Release policies (pol_release_*): the declarative rule set that gates
 *     each resource, in the spirit of Azure Secure Key Release policies:
 *       {"version": "1.0.0",
 *        "anyOf": [{"name": "prod", "allOf": [{"claim": "tee", "equals": "snp"},
 *                                             {"claim": "host_data", "in": ["…"]}]}]}
 *     Conditions: "equals", "notEquals", "in", "notIn", "matches" (POSIX
 *     extended regex, anchored at both ends), "gte", "gt", "lte", "lt" (also
 *     spelled greaterOrEquals, greater, lessOrEquals, less), "exists"
 *     (true/false). Rules nest anyOf / allOf. Claims are dotted paths into
 *     the input document (pol_claim_lookup). docs/kbs.md has the grammar.
 *
 * Thread-safety: parsed reference values and release policies are
 * immutable; evaluation may run on one object from several threads at once.
 * Trust assumption: reference values and policies come from the (trusted,
 * authenticated) KBS administrator but are parsed with hard bounds anyway;
 * the claims come from verified evidence, yet their values are chosen by
 * the workload and are treated as untrusted strings (bounded regex input,
 * no claim value is ever interpreted as a pattern or a path).
 */
#ifndef CISTA_APPRAISAL_H
#define CISTA_APPRAISAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "util/err.h"

#define POL_MAX_REFVALS (1u << 20)   /* bytes of a reference-values document */
#define POL_MAX_RELEASE (64u * 1024) /* bytes of one release policy */
#define POL_RELEASE_MAX_DEPTH 8      /* nesting of anyOf / allOf */
#define POL_RELEASE_MAX_NODES 512    /* rules + conditions in one policy */
#define POL_CLAIM_MAX_PATH 256       /* bytes of a dotted claim path */
#define POL_MATCH_MAX_INPUT 4096     /* bytes of a claim value given to a regex */

/* ---- appraisal ---- */

typedef enum {
    POL_AFFIRMING = 0,
    POL_WARNING = 1,
    POL_CONTRAINDICATED = 2,
} pol_status;

/* "affirming", "warning", "contraindicated". */
const char *pol_status_name(pol_status s);

typedef struct pol_refvals pol_refvals;

/*
 * Parse a reference-values document (docs/kbs.md):
 *   {"version": "1.0.0", "tees": {"<tee>": {"allow_insecure", "allow_debug",
 *    "measurements": {name: [hex…]}, "pcrs": {bank: {index: [hex…]}},
 *    "host_data": [hex…], "init_data": [hex…], "platform_ids": [hex…],
 *    "min_tcb": {component: n}, "tcb_status": [status…]}}}
 * Unknown members are errors (a typo must not silently weaken a check).
 * New object to the caller.
 */
int pol_refvals_parse(pol_refvals **out, const void *data, size_t size, cista_error **err)
    __attribute__((warn_unused_result));
void pol_refvals_free(pol_refvals *rv);
void pol__refvals_freep(pol_refvals **rv);
#define _cleanup_refvals_ __attribute__((cleanup(pol__refvals_freep)))

typedef struct {
    pol_status status;
    char *reason;   /* contraindicated: the failed check; warning: why not affirming; owned */
    json_t *checks; /* array of {"check", "result"} strings, owned */
} pol_appraisal;

void pol_appraisal_clear(pol_appraisal *a);

/*
 * Appraise @claims (borrowed) against @rv. @init_data_hex (may be NULL) is
 * the hex digest of the init-data the guest presented in the request (it is
 * accepted for the "init_data" check beside the claims' own init_data).
 * Fills *out (clear it with pol_appraisal_clear). Never fails for a
 * contraindicated result: the return value is for malformed claims only.
 */
int pol_appraise(pol_appraisal *out, const pol_refvals *rv, const json_t *claims,
                 const char *init_data_hex, cista_error **err) __attribute__((warn_unused_result));

/* ---- release policies ---- */

typedef struct pol_release pol_release;

/* Parse and validate a release policy (regexes compiled here). New object to the caller. */
int pol_release_parse(pol_release **out, const void *data, size_t size, cista_error **err)
    __attribute__((warn_unused_result));
void pol_release_free(pol_release *p);
void pol__release_freep(pol_release **p);
#define _cleanup_release_ __attribute__((cleanup(pol__release_freep)))

/*
 * Evaluate @p over the input document @input (borrowed). *out_allow tells
 * the decision; *out_reason (owned by the caller, never NULL on success)
 * names the rule that allowed, or for a denial every top-level rule with
 * its first failed condition ("rule \"prod\": claim host_data = \"ab…\" is
 * not in the 2 allowed values"). Claim values in reasons are truncated to
 * 64 bytes; the input must hold no secret. Errors only for misuse.
 */
int pol_release_eval(bool *out_allow, char **out_reason, const pol_release *p, const json_t *input,
                     cista_error **err) __attribute__((warn_unused_result));

/*
 * The value at dotted @path in @doc ("tcb.components.snp",
 * "measurements.pcrs.sha256.23"), or NULL. Object keys that themselves
 * contain dots ("ear.status") match too: at each level the longest key
 * that is a prefix of the remaining path wins. Array elements are
 * addressed by decimal index. Borrowed from @doc.
 */
const json_t *pol_claim_lookup(const json_t *doc, const char *path);

#endif
