/*
 * xks HSM emulator: a PKCS#11 v2.40 module that forwards every call to a real module (SoftHSMv2 by default) and
 * imposes one HSM vendor's documented behaviour on top, plus a latency per call and run-time fault injection.
 * It lets CI run the proxy's CloudHSM, Luna and nShield profiles without those HSMs. Test code only.
 *
 * Build: scripts/build-emulator.sh -> test/emulator/build/libxks-emulator.so
 *
 * CONFIGURATION
 *   Read at every C_Initialize. Precedence: environment variable, then the libraryParameters string, then default.
 *   libraryParameters is a space-separated list of key=value. pkcs11js (mod.C_Initialize({ flags, libraryParameters }))
 *   passes an NSS-style CK_C_INITIALIZE_ARGS whose 6th field holds the string pointer, i.e. the standard struct's
 *   pReserved: a non-NULL pReserved is therefore read as a NUL-terminated parameter string. The call is forwarded
 *   with the same flags and mutex callbacks but pReserved = NULL (SoftHSM refuses a non-NULL pReserved).
 *   pkcs11js 2.1.7 drops the last character of libraryParameters (its copy has no room for the NUL): end the string
 *   with a space, e.g. 'vendor=cloudhsm latency_us=2000 '.
 *     target=PATH       [XKS_EMULATOR_TARGET]      the real module; default /usr/lib/softhsm/libsofthsm2.so
 *     vendor=NAME       [XKS_EMULATOR_VENDOR]      none | cloudhsm | luna | nshield; default none (pure forwarding)
 *     hide=0xM[,0xM]    (libraryParameters only)   mechanisms the token lacks: left out of C_GetMechanismList, and
 *                                                  C_GetMechanismInfo / *Init with them answer CKR_MECHANISM_INVALID
 *                                                  (e.g. hide=0x1087: no CKM_AES_GCM, as openCryptoki's soft token)
 *     latency_us=N      [XKS_EMULATOR_LATENCY_US]  sleep N us in every C_Encrypt, C_Decrypt, C_Sign, C_GenerateKey,
 *                                                  C_FindObjectsInit and C_GetAttributeValue (a network HSM's round
 *                                                  trip); default 0
 *     control=PATH      [XKS_EMULATOR_CONTROL]     the control file (below); default none
 *   An unknown key or vendor makes C_Initialize answer CKR_ARGUMENTS_BAD (and says why on stderr).
 *   The target is dlopen'ed at the first C_Initialize and stays loaded (C_Finalize finalizes it, never unloads it).
 *   It is the same library instance as any other dlopen of that path in the process: do not use the target directly
 *   while the emulator has it initialized.
 *
 * CONTROL FILE (run-time behaviour)
 *   Re-read whenever its inode, size, mtime or ctime changes; it is stat'ed at most once every 2 ms, so a change is
 *   seen by calls made 2 ms or more after it. Write it atomically (write a temporary file, rename it over) so that two
 *   quick rewrites of equal size are never mistaken for one. A missing file means no rules. Re-reading re-arms every
 *   rule (COUNTs start again). One rule per line; '#' starts a comment; blank and unparsable lines are ignored
 *   (unparsable ones with a message on stderr). COUNTs survive C_Finalize/C_Initialize while the control path stays
 *   the same (so "fail C_Initialize CKR_DEVICE_ERROR 1" fails one initialisation only). FUNCTION is a PKCS#11 function name ("C_Encrypt"; the "C_" may be
 *   left out) or "*" for every function except C_Finalize. CKR is a CKR_ name (the "CKR_" may be left out), a hex
 *   number (0x30) or a decimal number.
 *     throttle [CKR]              C_GetAttributeValue answers CKR (default CKR_DEVICE_ERROR) while the line is present:
 *                                 CloudHSM rejecting requests when the cluster is over capacity (AWS CloudHSM user
 *                                 guide, "HSM throttling"; note that page says SDK 5 maps busy errors to
 *                                 CKR_FUNCTION_FAILED: write "throttle CKR_FUNCTION_FAILED" for that). Any vendor.
 *     fail FUNCTION CKR [COUNT]   FUNCTION returns CKR without calling the target, COUNT times (always without
 *                                 COUNT). When FUNCTION is one that ends an active operation on error (C_Encrypt*,
 *                                 C_Decrypt*, C_Sign*, C_Verify*, C_Digest*, C_SignRecover, C_VerifyRecover and the
 *                                 dual-function updates), the emulator ends the target's operation too, as PKCS#11
 *                                 says an error does, so the session can start a new one. An injected C_Finalize
 *                                 fault leaves the target initialized; C_Initialize faults are checked after the
 *                                 configuration is read (the control path comes from it).
 *     hang FUNCTION MS [COUNT]    FUNCTION sleeps MS milliseconds before going on (COUNT times, or always). A hang
 *                                 and a fail on the same call: the call sleeps, then fails.
 *     latency_us N                replaces the configured latency_us while present.
 *     count FUNCTION PATH         appends FUNCTION's name and a newline to PATH at every call of FUNCTION (for "*":
 *                                 the name of each function called, C_Finalize excepted), before any hang or fault:
 *                                 a test counts calls by counting lines (how many searches a burst of requests made).
 *     @PID RULE                   any rule above, in process PID only (one worker of several sharing the file).
 *     slot_offset N               while present, the application sees every slot id plus N (and gives them back so):
 *                                 a token enumerated again under a new slot id, as when an HSM partition or a
 *                                 network HSM's server is removed and added back; the old id answers
 *                                 CKR_SLOT_ID_INVALID.
 *   Example:
 *     fail C_Encrypt CKR_DEVICE_ERROR 2
 *     hang C_FindObjects 1500
 *     fail * DEVICE_REMOVED
 *
 * VENDOR BEHAVIOURS
 *   vendor=cloudhsm (AWS CloudHSM Client SDK 5)
 *     - C_SetAttributeValue: only CKA_LABEL, CKA_ENCRYPT, CKA_DECRYPT, CKA_SIGN, CKA_VERIFY, CKA_WRAP, CKA_UNWRAP,
 *       CKA_SENSITIVE, CKA_DERIVE, CKA_TRUSTED and CKA_WRAP_WITH_TRUSTED may change; a template with any other
 *       attribute answers CKR_ATTRIBUTE_READ_ONLY and changes nothing.
 *     - AES-GCM encrypt: the HSM generates the 12-byte IV. At C_EncryptInit(CKM_AES_GCM) the emulator draws 12 bytes
 *       from the target's C_GenerateRandom and writes them into the caller's pIv (whatever it held) before
 *       forwarding, so the caller reads the IV from its parameter afterwards. An IV length other than 12 answers
 *       CKR_MECHANISM_PARAM_INVALID.
 *     - C_Encrypt/C_Decrypt of an AES-GCM operation with input over 16 KiB answer CKR_DATA_LEN_RANGE (the operation
 *       ends).
 *   vendor=luna (Thales Luna HSM 7)
 *     - AES-GCM encrypt: the HSM generates a 96-bit IV and appends it to the output: ciphertext || tag || iv (12
 *       bytes). The caller's IV is ignored (a copy of the parameters carries the generated one to the target); the IV
 *       is remembered per session and appended by C_Encrypt/C_EncryptFinal (length queries and CKR_BUFFER_TOO_SMALL
 *       count the 12 bytes).
 *     - RFC 5649 key wrap is the PKCS#11 v3.0 CKM_AES_KEY_WRAP_KWP (0x210B); SoftHSM implements RFC 5649 under
 *       0x210A (CKM_AES_KEY_WRAP_PAD). C_GetMechanismList reports 0x210B instead of 0x210A, C_GetMechanismInfo(0x210B)
 *       answers the target's 0x210A, C_EncryptInit/C_DecryptInit/C_WrapKey/C_UnwrapKey forward 0x210B as 0x210A, and
 *       0x210A itself answers CKR_MECHANISM_INVALID everywhere.
 *   vendor=nshield (Entrust nShield)
 *     - AES-GCM decrypt whose tag does not verify answers CKR_FUNCTION_FAILED (SoftHSM says CKR_GENERAL_ERROR or
 *       CKR_ENCRYPTED_DATA_INVALID: both are translated for AES-GCM decrypts).
 *     - AES-GCM encrypt: the HSM generates the IV and writes it into the caller's pIv (as cloudhsm, any IV length).
 *   Every vendor: C_GetInfo says "xks emulator (<vendor>)" in libraryDescription.
 *
 * Per-session state (which sessions have an AES-GCM encrypt or decrypt active, Luna's IV) lives in a hash table
 * keyed by session handle under a mutex; C_CloseSession forgets a session, C_CloseAllSessions and C_Finalize forget
 * them all.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CK_PTR *
#define CK_DEFINE_FUNCTION(returnType, name) returnType name
#define CK_DECLARE_FUNCTION(returnType, name) returnType name
#define CK_DECLARE_FUNCTION_POINTER(returnType, name) returnType(*name)
#define CK_CALLBACK_FUNCTION(returnType, name) returnType(*name)
#ifndef NULL_PTR
#define NULL_PTR 0
#endif
#include "pkcs11.h"

#define EXPORT __attribute__((visibility("default")))

#define MECH_AES_KEY_WRAP_PAD 0x210AUL /* SoftHSM's number for RFC 5649 */
#define MECH_AES_KEY_WRAP_KWP 0x210BUL /* PKCS#11 v3.0's number for RFC 5649 */
#define GCM_IV_BYTES 12
#define CLOUDHSM_GCM_MAX 16384

enum vendor { V_NONE, V_CLOUDHSM, V_LUNA, V_NSHIELD };
static const char *const vendor_names[] = {"none", "cloudhsm", "luna", "nshield"};

#define MAX_HIDDEN 8
struct config {
  char target[PATH_MAX];
  enum vendor vendor;
  unsigned long latency_us;
  char control[PATH_MAX];
  /* Mechanisms the token does not have (as openCryptoki's soft token has no CKM_AES_GCM): not listed, refused. */
  CK_MECHANISM_TYPE hidden[MAX_HIDDEN];
  int n_hidden;
};

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static struct config cfg;
static void *target_dl;
static char target_dl_path[PATH_MAX];
static CK_FUNCTION_LIST_PTR T; /* the target's function list */

/* ---- small helpers ------------------------------------------------------------------------------------------ */

static void sleep_us(unsigned long us) {
  struct timespec ts = {(time_t)(us / 1000000UL), (long)(us % 1000000UL) * 1000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static const struct {
  const char *name;
  CK_RV rv;
} ckr_names[] = {
    {"OK", CKR_OK},
    {"CANCEL", CKR_CANCEL},
    {"HOST_MEMORY", CKR_HOST_MEMORY},
    {"SLOT_ID_INVALID", CKR_SLOT_ID_INVALID},
    {"GENERAL_ERROR", CKR_GENERAL_ERROR},
    {"FUNCTION_FAILED", CKR_FUNCTION_FAILED},
    {"ARGUMENTS_BAD", CKR_ARGUMENTS_BAD},
    {"CANT_LOCK", CKR_CANT_LOCK},
    {"ATTRIBUTE_READ_ONLY", CKR_ATTRIBUTE_READ_ONLY},
    {"ATTRIBUTE_TYPE_INVALID", CKR_ATTRIBUTE_TYPE_INVALID},
    {"ATTRIBUTE_VALUE_INVALID", CKR_ATTRIBUTE_VALUE_INVALID},
    {"ACTION_PROHIBITED", CKR_ACTION_PROHIBITED},
    {"DATA_INVALID", CKR_DATA_INVALID},
    {"DATA_LEN_RANGE", CKR_DATA_LEN_RANGE},
    {"DEVICE_ERROR", CKR_DEVICE_ERROR},
    {"DEVICE_MEMORY", CKR_DEVICE_MEMORY},
    {"DEVICE_REMOVED", CKR_DEVICE_REMOVED},
    {"ENCRYPTED_DATA_INVALID", CKR_ENCRYPTED_DATA_INVALID},
    {"ENCRYPTED_DATA_LEN_RANGE", CKR_ENCRYPTED_DATA_LEN_RANGE},
    {"FUNCTION_CANCELED", CKR_FUNCTION_CANCELED},
    {"FUNCTION_NOT_SUPPORTED", CKR_FUNCTION_NOT_SUPPORTED},
    {"KEY_HANDLE_INVALID", CKR_KEY_HANDLE_INVALID},
    {"KEY_FUNCTION_NOT_PERMITTED", CKR_KEY_FUNCTION_NOT_PERMITTED},
    {"MECHANISM_INVALID", CKR_MECHANISM_INVALID},
    {"MECHANISM_PARAM_INVALID", CKR_MECHANISM_PARAM_INVALID},
    {"OBJECT_HANDLE_INVALID", CKR_OBJECT_HANDLE_INVALID},
    {"OPERATION_ACTIVE", CKR_OPERATION_ACTIVE},
    {"OPERATION_NOT_INITIALIZED", CKR_OPERATION_NOT_INITIALIZED},
    {"PIN_INCORRECT", CKR_PIN_INCORRECT},
    {"PIN_LOCKED", CKR_PIN_LOCKED},
    {"SESSION_CLOSED", CKR_SESSION_CLOSED},
    {"SESSION_COUNT", CKR_SESSION_COUNT},
    {"SESSION_HANDLE_INVALID", CKR_SESSION_HANDLE_INVALID},
    {"SESSION_READ_ONLY", CKR_SESSION_READ_ONLY},
    {"TEMPLATE_INCOMPLETE", CKR_TEMPLATE_INCOMPLETE},
    {"TEMPLATE_INCONSISTENT", CKR_TEMPLATE_INCONSISTENT},
    {"TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_PRESENT},
    {"TOKEN_NOT_RECOGNIZED", CKR_TOKEN_NOT_RECOGNIZED},
    {"USER_ALREADY_LOGGED_IN", CKR_USER_ALREADY_LOGGED_IN},
    {"USER_NOT_LOGGED_IN", CKR_USER_NOT_LOGGED_IN},
    {"USER_TYPE_INVALID", CKR_USER_TYPE_INVALID},
    {"BUFFER_TOO_SMALL", CKR_BUFFER_TOO_SMALL},
    {"CRYPTOKI_NOT_INITIALIZED", CKR_CRYPTOKI_NOT_INITIALIZED},
    {"CRYPTOKI_ALREADY_INITIALIZED", CKR_CRYPTOKI_ALREADY_INITIALIZED},
    {"RANDOM_NO_RNG", CKR_RANDOM_NO_RNG},
};

static int parse_ckr(const char *s, CK_RV *out) {
  char *end;
  if (strncasecmp(s, "CKR_", 4) == 0) s += 4;
  for (size_t i = 0; i < sizeof ckr_names / sizeof ckr_names[0]; i++) {
    if (strcasecmp(s, ckr_names[i].name) == 0) {
      *out = ckr_names[i].rv;
      return 1;
    }
  }
  if (*s < '0' || *s > '9') return 0;
  errno = 0;
  unsigned long v = strtoul(s, &end, 0);
  if (errno != 0 || *end != '\0') return 0;
  *out = (CK_RV)v;
  return 1;
}

static int parse_ulong(const char *s, unsigned long *out) {
  char *end;
  if (*s < '0' || *s > '9') return 0;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno != 0 || *end != '\0') return 0;
  *out = v;
  return 1;
}

/* ---- configuration ------------------------------------------------------------------------------------------ */

static int set_setting(struct config *c, const char *key, const char *val) {
  if (strcmp(key, "target") == 0) {
    snprintf(c->target, sizeof c->target, "%s", val);
  } else if (strcmp(key, "control") == 0) {
    snprintf(c->control, sizeof c->control, "%s", val);
  } else if (strcmp(key, "latency_us") == 0) {
    if (!parse_ulong(val, &c->latency_us)) return 0;
  } else if (strcmp(key, "hide") == 0) {
    /* hide=0x1087[,0x...]: mechanism numbers, comma separated. */
    char list[256];
    char *save = NULL;
    snprintf(list, sizeof list, "%s", val);
    for (char *m = strtok_r(list, ",", &save); m != NULL; m = strtok_r(NULL, ",", &save)) {
      char *end;
      errno = 0;
      unsigned long v = strtoul(m, &end, 0);
      if (errno != 0 || *end != '\0' || c->n_hidden >= MAX_HIDDEN) return 0;
      c->hidden[c->n_hidden++] = (CK_MECHANISM_TYPE)v;
    }
  } else if (strcmp(key, "vendor") == 0) {
    int found = 0;
    for (int v = V_NONE; v <= V_NSHIELD; v++) {
      if (strcasecmp(val, vendor_names[v]) == 0) {
        c->vendor = (enum vendor)v;
        found = 1;
      }
    }
    if (!found) return 0;
  } else {
    return 0;
  }
  return 1;
}

static CK_RV read_config(struct config *c, const char *params) {
  memset(c, 0, sizeof *c);
  snprintf(c->target, sizeof c->target, "%s", "/usr/lib/softhsm/libsofthsm2.so");
  if (params != NULL) {
    char buf[4096];
    char *save = NULL;
    snprintf(buf, sizeof buf, "%s", params);
    for (char *tok = strtok_r(buf, " \t\r\n", &save); tok != NULL; tok = strtok_r(NULL, " \t\r\n", &save)) {
      char *eq = strchr(tok, '=');
      if (eq == NULL) {
        fprintf(stderr, "xks-emulator: libraryParameters: \"%s\" is not key=value\n", tok);
        return CKR_ARGUMENTS_BAD;
      }
      *eq = '\0';
      if (!set_setting(c, tok, eq + 1)) {
        fprintf(stderr, "xks-emulator: libraryParameters: bad setting %s=%s\n", tok, eq + 1);
        return CKR_ARGUMENTS_BAD;
      }
    }
  }
  static const char *const env[][2] = {{"XKS_EMULATOR_TARGET", "target"},
                                       {"XKS_EMULATOR_VENDOR", "vendor"},
                                       {"XKS_EMULATOR_LATENCY_US", "latency_us"},
                                       {"XKS_EMULATOR_CONTROL", "control"}};
  for (size_t i = 0; i < sizeof env / sizeof env[0]; i++) {
    const char *v = getenv(env[i][0]);
    if (v == NULL || *v == '\0') continue;
    if (!set_setting(c, env[i][1], v)) {
      fprintf(stderr, "xks-emulator: bad %s=%s\n", env[i][0], v);
      return CKR_ARGUMENTS_BAD;
    }
  }
  return CKR_OK;
}

/* ---- control file ------------------------------------------------------------------------------------------- */

#define MAX_RULES 64
enum rule_kind { R_FAIL, R_HANG, R_COUNT };
struct rule {
  enum rule_kind kind;
  char fn[48];
  CK_RV rv;
  long count; /* -1: always */
  unsigned long ms;
  char out[PATH_MAX]; /* R_COUNT: the file that gets one line per call */
};

static struct {
  pthread_mutex_t lock;
  char path[PATH_MAX];
  int checked;   /* stat'ed at least once since the path was set */
  int present;   /* the file existed at the last stat */
  struct stat st;
  uint64_t last_check;
  int throttle;
  CK_RV throttle_rv;
  long latency_us; /* -1: not set */
  CK_SLOT_ID slot_offset;
  struct rule rules[MAX_RULES];
  int nrules;
} ctl = {.lock = PTHREAD_MUTEX_INITIALIZER, .latency_us = -1};

static void ctl_clear_rules(void) {
  ctl.nrules = 0;
  ctl.throttle = 0;
  ctl.latency_us = -1;
  ctl.slot_offset = 0;
}

static void ctl_parse_line(char *line, int lineno) {
  char *hash = strchr(line, '#');
  if (hash != NULL) *hash = '\0';
  char *save = NULL;
  char *w[5] = {0};
  int n = 0;
  for (char *tok = strtok_r(line, " \t\r\n", &save); tok != NULL && n < 5; tok = strtok_r(NULL, " \t\r\n", &save))
    w[n++] = tok;
  if (n == 0) return;
  /* "@PID rule": the rule applies in that process only (one worker of several sharing the control file). */
  if (w[0][0] == '@') {
    unsigned long pid;
    if (!parse_ulong(w[0] + 1, &pid)) goto bad;
    if ((pid_t)pid != getpid()) return;
    for (int i = 0; i < n - 1; i++) w[i] = w[i + 1];
    w[--n] = NULL;
    if (n == 0) goto bad;
  }
  if (strcmp(w[0], "throttle") == 0 && n <= 2) {
    CK_RV rv = CKR_DEVICE_ERROR;
    if (n == 2 && !parse_ckr(w[1], &rv)) goto bad;
    ctl.throttle = 1;
    ctl.throttle_rv = rv;
    return;
  }
  if (strcmp(w[0], "slot_offset") == 0 && n == 2) {
    unsigned long v;
    if (!parse_ulong(w[1], &v)) goto bad;
    ctl.slot_offset = (CK_SLOT_ID)v;
    return;
  }
  if (strcmp(w[0], "latency_us") == 0 && n == 2) {
    unsigned long v;
    if (!parse_ulong(w[1], &v)) goto bad;
    ctl.latency_us = (long)v;
    return;
  }
  if (strcmp(w[0], "count") == 0 && n == 3) {
    if (ctl.nrules >= MAX_RULES) goto bad;
    struct rule *r = &ctl.rules[ctl.nrules];
    memset(r, 0, sizeof *r);
    r->kind = R_COUNT;
    if (strcmp(w[1], "*") == 0 || strncmp(w[1], "C_", 2) == 0)
      snprintf(r->fn, sizeof r->fn, "%s", w[1]);
    else
      snprintf(r->fn, sizeof r->fn, "C_%s", w[1]);
    snprintf(r->out, sizeof r->out, "%s", w[2]);
    r->count = -1;
    ctl.nrules++;
    return;
  }
  if ((strcmp(w[0], "fail") == 0 || strcmp(w[0], "hang") == 0) && (n == 3 || n == 4)) {
    if (ctl.nrules >= MAX_RULES) goto bad;
    struct rule *r = &ctl.rules[ctl.nrules];
    memset(r, 0, sizeof *r);
    r->kind = w[0][0] == 'f' ? R_FAIL : R_HANG;
    if (strcmp(w[1], "*") == 0 || strncmp(w[1], "C_", 2) == 0)
      snprintf(r->fn, sizeof r->fn, "%s", w[1]);
    else
      snprintf(r->fn, sizeof r->fn, "C_%s", w[1]);
    if (r->kind == R_FAIL) {
      if (!parse_ckr(w[2], &r->rv)) goto bad;
    } else if (!parse_ulong(w[2], &r->ms)) {
      goto bad;
    }
    r->count = -1;
    if (n == 4) {
      unsigned long c;
      if (!parse_ulong(w[3], &c)) goto bad;
      r->count = (long)c;
    }
    ctl.nrules++;
    return;
  }
bad:
  fprintf(stderr, "xks-emulator: %s:%d: ignored a line it does not understand\n", ctl.path, lineno);
}

static void ctl_load(void) {
  ctl_clear_rules();
  FILE *f = fopen(ctl.path, "r");
  if (f == NULL) return;
  char line[512];
  int lineno = 0;
  while (fgets(line, sizeof line, f) != NULL) ctl_parse_line(line, ++lineno);
  fclose(f);
}

static int same_stat(const struct stat *a, const struct stat *b) {
  return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
         a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
         a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Called with ctl.lock held. */
static void ctl_refresh_locked(void) {
  if (ctl.path[0] == '\0') return;
  uint64_t now = now_ns();
  if (ctl.checked && now - ctl.last_check < 2000000ULL) return;
  ctl.last_check = now;
  struct stat st;
  if (stat(ctl.path, &st) != 0) {
    if (!ctl.checked || ctl.present) ctl_clear_rules();
    ctl.present = 0;
    ctl.checked = 1;
    return;
  }
  if (!ctl.checked || !ctl.present || !same_stat(&st, &ctl.st)) {
    ctl.st = st;
    ctl_load();
  }
  ctl.present = 1;
  ctl.checked = 1;
}

/* A new path starts afresh; the same path keeps its rules and their remaining COUNTs across C_Initialize. */
static void ctl_set_path(const char *path) {
  pthread_mutex_lock(&ctl.lock);
  if (strcmp(ctl.path, path) == 0) {
    pthread_mutex_unlock(&ctl.lock);
    return;
  }
  snprintf(ctl.path, sizeof ctl.path, "%s", path);
  ctl.checked = 0;
  ctl.present = 0;
  ctl_clear_rules();
  pthread_mutex_unlock(&ctl.lock);
}

/* One line per call, appended (O_APPEND: lines from several threads never interleave). */
static void count_call(const char *path, const char *fn) {
  char line[64];
  int len = snprintf(line, sizeof line, "%s\n", fn);
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return;
  if (write(fd, line, (size_t)len) != len) fprintf(stderr, "xks-emulator: could not count a call in %s\n", path);
  close(fd);
}

/* The latency functions (LAT) sleep; faults and hangs for `fn` apply. Returns the injected code or CKR_OK. */
enum { NOLAT = 0, LAT = 1 };
static CK_RV enter(const char *fn, int latency) {
  unsigned long hang_ms = 0;
  CK_RV rv = CKR_OK;
  long lat;
  pthread_mutex_lock(&ctl.lock);
  ctl_refresh_locked();
  for (int i = 0; i < ctl.nrules; i++) {
    struct rule *r = &ctl.rules[i];
    if (r->count == 0) continue;
    if (strcmp(r->fn, fn) != 0 && !(strcmp(r->fn, "*") == 0 && strcmp(fn, "C_Finalize") != 0)) continue;
    if (r->kind == R_COUNT) {
      count_call(r->out, fn);
    } else if (r->kind == R_HANG && hang_ms == 0) {
      hang_ms = r->ms;
      if (r->count > 0) r->count--;
    } else if (r->kind == R_FAIL && rv == CKR_OK) {
      rv = r->rv;
      if (r->count > 0) r->count--;
    }
  }
  lat = ctl.latency_us >= 0 ? ctl.latency_us : (long)cfg.latency_us;
  pthread_mutex_unlock(&ctl.lock);
  if (hang_ms > 0) sleep_us(hang_ms * 1000UL);
  if (rv != CKR_OK) return rv;
  if (latency && lat > 0) sleep_us((unsigned long)lat);
  return CKR_OK;
}

/* slot_offset: the application's slot id -> the target's (CKR_SLOT_ID_INVALID for an id from before the offset changed). */
static CK_SLOT_ID slot_shift(void) {
  pthread_mutex_lock(&ctl.lock);
  ctl_refresh_locked();
  CK_SLOT_ID off = ctl.slot_offset;
  pthread_mutex_unlock(&ctl.lock);
  return off;
}

static CK_RV slot_in(CK_SLOT_ID *id) {
  CK_SLOT_ID off = slot_shift();
  if (off == 0) return CKR_OK;
  if (*id < off) return CKR_SLOT_ID_INVALID;
  *id -= off;
  return CKR_OK;
}

static int ctl_throttled(CK_RV *rv) {
  pthread_mutex_lock(&ctl.lock);
  ctl_refresh_locked();
  int t = ctl.throttle;
  *rv = ctl.throttle_rv;
  pthread_mutex_unlock(&ctl.lock);
  return t;
}

/* ---- per-session state -------------------------------------------------------------------------------------- */

struct sess {
  CK_SESSION_HANDLE h;
  int enc_gcm;
  int dec_gcm;
  int has_iv; /* luna: the IV to append */
  CK_BYTE iv[GCM_IV_BYTES];
  struct sess *next;
};
#define SESS_BUCKETS 256
static struct sess *sess_table[SESS_BUCKETS];
static pthread_mutex_t sess_lock = PTHREAD_MUTEX_INITIALIZER;

/* Called with sess_lock held. */
static struct sess *sess_find(CK_SESSION_HANDLE h, int create) {
  struct sess **b = &sess_table[h % SESS_BUCKETS];
  for (struct sess *s = *b; s != NULL; s = s->next)
    if (s->h == h) return s;
  if (!create) return NULL;
  struct sess *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  s->h = h;
  s->next = *b;
  *b = s;
  return s;
}

static void sess_set_enc(CK_SESSION_HANDLE h, int gcm, const CK_BYTE *iv) {
  pthread_mutex_lock(&sess_lock);
  struct sess *s = sess_find(h, gcm);
  if (s != NULL) {
    s->enc_gcm = gcm;
    s->has_iv = gcm && iv != NULL;
    if (s->has_iv) memcpy(s->iv, iv, GCM_IV_BYTES);
  }
  pthread_mutex_unlock(&sess_lock);
}

static void sess_set_dec(CK_SESSION_HANDLE h, int gcm) {
  pthread_mutex_lock(&sess_lock);
  struct sess *s = sess_find(h, gcm);
  if (s != NULL) s->dec_gcm = gcm;
  pthread_mutex_unlock(&sess_lock);
}

/* Copies the session's state out (zeros when unknown). */
static struct sess sess_get(CK_SESSION_HANDLE h) {
  struct sess copy;
  memset(&copy, 0, sizeof copy);
  pthread_mutex_lock(&sess_lock);
  struct sess *s = sess_find(h, 0);
  if (s != NULL) copy = *s;
  pthread_mutex_unlock(&sess_lock);
  copy.next = NULL;
  return copy;
}

static void sess_forget(CK_SESSION_HANDLE h) {
  pthread_mutex_lock(&sess_lock);
  struct sess **p = &sess_table[h % SESS_BUCKETS];
  while (*p != NULL) {
    if ((*p)->h == h) {
      struct sess *dead = *p;
      *p = dead->next;
      free(dead);
      break;
    }
    p = &(*p)->next;
  }
  pthread_mutex_unlock(&sess_lock);
}

static void sess_forget_all(void) {
  pthread_mutex_lock(&sess_lock);
  for (int i = 0; i < SESS_BUCKETS; i++) {
    while (sess_table[i] != NULL) {
      struct sess *dead = sess_table[i];
      sess_table[i] = dead->next;
      free(dead);
    }
  }
  pthread_mutex_unlock(&sess_lock);
}

/* A single-part or final call ended its operation unless it was a length query or too small a buffer. */
static int op_ended(CK_RV rv, const void *out) {
  return !(rv == CKR_BUFFER_TOO_SMALL || (rv == CKR_OK && out == NULL));
}

/* ---- ending the target's operation when the emulator answers in its place ------------------------------------ */

enum { OP_ENC = 1, OP_DEC = 2, OP_SIGN = 4, OP_VERIFY = 8, OP_DIGEST = 16, OP_SIGNREC = 32, OP_VERIFYREC = 64 };

/* Best effort: a throw-away call of each kind ends an active operation (with a result or an error, either will do). */
static void end_target_op(int ops, CK_SESSION_HANDLE h) {
  static const CK_BYTE zeros[64];
  CK_BYTE *in = (CK_BYTE *)zeros;
  CK_BYTE out[8192];
  CK_ULONG len;
  if (T == NULL) return;
  if (ops & OP_ENC) {
    len = sizeof out;
    T->C_Encrypt(h, in, 0, out, &len);
    len = sizeof out;
    T->C_EncryptFinal(h, out, &len);
    sess_set_enc(h, 0, NULL);
  }
  if (ops & OP_DEC) {
    len = sizeof out;
    T->C_Decrypt(h, in, 32, out, &len);
    len = sizeof out;
    T->C_DecryptFinal(h, out, &len);
    sess_set_dec(h, 0);
  }
  if (ops & OP_SIGN) {
    len = sizeof out;
    T->C_Sign(h, in, 0, out, &len);
    len = sizeof out;
    T->C_SignFinal(h, out, &len);
  }
  if (ops & OP_VERIFY) {
    T->C_Verify(h, in, 0, in, 1);
    T->C_VerifyFinal(h, in, 1);
  }
  if (ops & OP_DIGEST) {
    len = sizeof out;
    T->C_Digest(h, in, 0, out, &len);
    len = sizeof out;
    T->C_DigestFinal(h, out, &len);
  }
  if (ops & OP_SIGNREC) {
    len = sizeof out;
    T->C_SignRecover(h, in, 0, out, &len);
  }
  if (ops & OP_VERIFYREC) {
    len = sizeof out;
    T->C_VerifyRecover(h, in, 1, out, &len);
  }
}

/* ---- generic forwarding --------------------------------------------------------------------------------------- */

#define NEED_TARGET()                                                                                                  \
  do {                                                                                                                 \
    if (T == NULL) return CKR_CRYPTOKI_NOT_INITIALIZED;                                                                \
  } while (0)

/* Plain forwarding with fault injection. */
#define FWD(fn, lat, params, args)                                                                                     \
  static CK_RV em_##fn params {                                                                                        \
    NEED_TARGET();                                                                                                     \
    CK_RV rv_ = enter(#fn, lat);                                                                                       \
    if (rv_ != CKR_OK) return rv_;                                                                                     \
    return T->fn args;                                                                                                 \
  }

/* Forwarding of a call that ends an operation when it fails: an injected fault ends the target's operation too. */
#define FWD_OP(fn, lat, ops, params, args)                                                                             \
  static CK_RV em_##fn params {                                                                                        \
    NEED_TARGET();                                                                                                     \
    CK_RV rv_ = enter(#fn, lat);                                                                                       \
    if (rv_ != CKR_OK) {                                                                                               \
      end_target_op(ops, hSession);                                                                                    \
      return rv_;                                                                                                      \
    }                                                                                                                  \
    return T->fn args;                                                                                                 \
  }

/* Forwarding of a call that names a slot: the id goes through slot_offset first. */
#define FWD_SLOT(fn, params, args)                                                                                     \
  static CK_RV em_##fn params {                                                                                        \
    NEED_TARGET();                                                                                                     \
    CK_RV rv_ = enter(#fn, NOLAT);                                                                                     \
    if (rv_ == CKR_OK) rv_ = slot_in(&slotID);                                                                         \
    if (rv_ != CKR_OK) return rv_;                                                                                     \
    return T->fn args;                                                                                                 \
  }

static CK_RV em_C_GetSlotList(CK_BBOOL tokenPresent, CK_SLOT_ID_PTR pSlotList, CK_ULONG_PTR pulCount) {
  NEED_TARGET();
  CK_RV rv = enter("C_GetSlotList", NOLAT);
  if (rv != CKR_OK) return rv;
  rv = T->C_GetSlotList(tokenPresent, pSlotList, pulCount);
  CK_SLOT_ID off = slot_shift();
  if (rv == CKR_OK && pSlotList != NULL && off != 0)
    for (CK_ULONG i = 0; i < *pulCount; i++) pSlotList[i] += off;
  return rv;
}
FWD_SLOT(C_GetSlotInfo, (CK_SLOT_ID slotID, CK_SLOT_INFO_PTR pInfo), (slotID, pInfo))
FWD_SLOT(C_GetTokenInfo, (CK_SLOT_ID slotID, CK_TOKEN_INFO_PTR pInfo), (slotID, pInfo))
FWD_SLOT(C_InitToken, (CK_SLOT_ID slotID, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen, CK_UTF8CHAR_PTR pLabel),
    (slotID, pPin, ulPinLen, pLabel))
FWD(C_InitPIN, NOLAT, (CK_SESSION_HANDLE hSession, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen), (hSession, pPin, ulPinLen))
FWD(C_SetPIN, NOLAT,
    (CK_SESSION_HANDLE hSession, CK_UTF8CHAR_PTR pOldPin, CK_ULONG ulOldLen, CK_UTF8CHAR_PTR pNewPin, CK_ULONG ulNewLen),
    (hSession, pOldPin, ulOldLen, pNewPin, ulNewLen))
FWD_SLOT(C_OpenSession,
    (CK_SLOT_ID slotID, CK_FLAGS flags, CK_VOID_PTR pApplication, CK_NOTIFY Notify, CK_SESSION_HANDLE_PTR phSession),
    (slotID, flags, pApplication, Notify, phSession))
static CK_RV em_C_GetSessionInfo(CK_SESSION_HANDLE hSession, CK_SESSION_INFO_PTR pInfo) {
  NEED_TARGET();
  CK_RV rv = enter("C_GetSessionInfo", NOLAT);
  if (rv != CKR_OK) return rv;
  rv = T->C_GetSessionInfo(hSession, pInfo);
  if (rv == CKR_OK && pInfo != NULL) pInfo->slotID += slot_shift();
  return rv;
}
FWD(C_GetOperationState, NOLAT,
    (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pOperationState, CK_ULONG_PTR pulOperationStateLen),
    (hSession, pOperationState, pulOperationStateLen))
FWD(C_SetOperationState, NOLAT,
    (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pOperationState, CK_ULONG ulOperationStateLen,
     CK_OBJECT_HANDLE hEncryptionKey, CK_OBJECT_HANDLE hAuthenticationKey),
    (hSession, pOperationState, ulOperationStateLen, hEncryptionKey, hAuthenticationKey))
FWD(C_Login, NOLAT, (CK_SESSION_HANDLE hSession, CK_USER_TYPE userType, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen),
    (hSession, userType, pPin, ulPinLen))
FWD(C_Logout, NOLAT, (CK_SESSION_HANDLE hSession), (hSession))
FWD(C_CopyObject, NOLAT,
    (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount,
     CK_OBJECT_HANDLE_PTR phNewObject),
    (hSession, hObject, pTemplate, ulCount, phNewObject))
FWD(C_DestroyObject, NOLAT, (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject), (hSession, hObject))
FWD(C_GetObjectSize, NOLAT, (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ULONG_PTR pulSize),
    (hSession, hObject, pulSize))
FWD(C_FindObjectsInit, LAT, (CK_SESSION_HANDLE hSession, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount),
    (hSession, pTemplate, ulCount))
FWD(C_FindObjects, NOLAT,
    (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE_PTR phObject, CK_ULONG ulMaxObjectCount, CK_ULONG_PTR pulObjectCount),
    (hSession, phObject, ulMaxObjectCount, pulObjectCount))
FWD(C_FindObjectsFinal, NOLAT, (CK_SESSION_HANDLE hSession), (hSession))
FWD(C_DigestInit, NOLAT, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism), (hSession, pMechanism))
FWD_OP(C_Digest, NOLAT, OP_DIGEST,
       (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pDigest,
        CK_ULONG_PTR pulDigestLen),
       (hSession, pData, ulDataLen, pDigest, pulDigestLen))
FWD_OP(C_DigestUpdate, NOLAT, OP_DIGEST, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen),
       (hSession, pPart, ulPartLen))
FWD_OP(C_DigestKey, NOLAT, OP_DIGEST, (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hKey), (hSession, hKey))
FWD_OP(C_DigestFinal, NOLAT, OP_DIGEST, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pDigest, CK_ULONG_PTR pulDigestLen),
       (hSession, pDigest, pulDigestLen))
FWD(C_SignInit, NOLAT, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey),
    (hSession, pMechanism, hKey))
FWD_OP(C_Sign, LAT, OP_SIGN,
       (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,
        CK_ULONG_PTR pulSignatureLen),
       (hSession, pData, ulDataLen, pSignature, pulSignatureLen))
FWD_OP(C_SignUpdate, NOLAT, OP_SIGN, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen),
       (hSession, pPart, ulPartLen))
FWD_OP(C_SignFinal, NOLAT, OP_SIGN, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen),
       (hSession, pSignature, pulSignatureLen))
FWD(C_SignRecoverInit, NOLAT, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey),
    (hSession, pMechanism, hKey))
FWD_OP(C_SignRecover, NOLAT, OP_SIGNREC,
       (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,
        CK_ULONG_PTR pulSignatureLen),
       (hSession, pData, ulDataLen, pSignature, pulSignatureLen))
FWD(C_VerifyInit, NOLAT, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey),
    (hSession, pMechanism, hKey))
FWD_OP(C_Verify, NOLAT, OP_VERIFY,
       (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,
        CK_ULONG ulSignatureLen),
       (hSession, pData, ulDataLen, pSignature, ulSignatureLen))
FWD_OP(C_VerifyUpdate, NOLAT, OP_VERIFY, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen),
       (hSession, pPart, ulPartLen))
FWD_OP(C_VerifyFinal, NOLAT, OP_VERIFY, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen),
       (hSession, pSignature, ulSignatureLen))
FWD(C_VerifyRecoverInit, NOLAT, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey),
    (hSession, pMechanism, hKey))
FWD_OP(C_VerifyRecover, NOLAT, OP_VERIFYREC,
       (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen, CK_BYTE_PTR pData,
        CK_ULONG_PTR pulDataLen),
       (hSession, pSignature, ulSignatureLen, pData, pulDataLen))
FWD_OP(C_DigestEncryptUpdate, NOLAT, OP_DIGEST | OP_ENC,
       (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen, CK_BYTE_PTR pEncryptedPart,
        CK_ULONG_PTR pulEncryptedPartLen),
       (hSession, pPart, ulPartLen, pEncryptedPart, pulEncryptedPartLen))
FWD_OP(C_DecryptDigestUpdate, NOLAT, OP_DEC | OP_DIGEST,
       (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedPart, CK_ULONG ulEncryptedPartLen, CK_BYTE_PTR pPart,
        CK_ULONG_PTR pulPartLen),
       (hSession, pEncryptedPart, ulEncryptedPartLen, pPart, pulPartLen))
FWD_OP(C_SignEncryptUpdate, NOLAT, OP_SIGN | OP_ENC,
       (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen, CK_BYTE_PTR pEncryptedPart,
        CK_ULONG_PTR pulEncryptedPartLen),
       (hSession, pPart, ulPartLen, pEncryptedPart, pulEncryptedPartLen))
FWD_OP(C_DecryptVerifyUpdate, NOLAT, OP_DEC | OP_VERIFY,
       (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedPart, CK_ULONG ulEncryptedPartLen, CK_BYTE_PTR pPart,
        CK_ULONG_PTR pulPartLen),
       (hSession, pEncryptedPart, ulEncryptedPartLen, pPart, pulPartLen))
FWD(C_GenerateKeyPair, NOLAT,
    (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_ATTRIBUTE_PTR pPublicKeyTemplate,
     CK_ULONG ulPublicKeyAttributeCount, CK_ATTRIBUTE_PTR pPrivateKeyTemplate, CK_ULONG ulPrivateKeyAttributeCount,
     CK_OBJECT_HANDLE_PTR phPublicKey, CK_OBJECT_HANDLE_PTR phPrivateKey),
    (hSession, pMechanism, pPublicKeyTemplate, ulPublicKeyAttributeCount, pPrivateKeyTemplate,
     ulPrivateKeyAttributeCount, phPublicKey, phPrivateKey))
FWD(C_DeriveKey, NOLAT,
    (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hBaseKey, CK_ATTRIBUTE_PTR pTemplate,
     CK_ULONG ulAttributeCount, CK_OBJECT_HANDLE_PTR phKey),
    (hSession, pMechanism, hBaseKey, pTemplate, ulAttributeCount, phKey))
FWD(C_SeedRandom, NOLAT, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSeed, CK_ULONG ulSeedLen), (hSession, pSeed, ulSeedLen))
FWD(C_GenerateRandom, NOLAT, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR RandomData, CK_ULONG ulRandomLen),
    (hSession, RandomData, ulRandomLen))
FWD(C_GetFunctionStatus, NOLAT, (CK_SESSION_HANDLE hSession), (hSession))
FWD(C_CancelFunction, NOLAT, (CK_SESSION_HANDLE hSession), (hSession))
FWD(C_WaitForSlotEvent, NOLAT, (CK_FLAGS flags, CK_SLOT_ID_PTR pSlot, CK_VOID_PTR pReserved), (flags, pSlot, pReserved))

/* ---- library and sessions ------------------------------------------------------------------------------------- */

static CK_RV load_target(const char *path) {
  if (target_dl != NULL && strcmp(path, target_dl_path) == 0) return CKR_OK;
  void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (dl == NULL) {
    fprintf(stderr, "xks-emulator: cannot load the target %s: %s\n", path, dlerror());
    return CKR_GENERAL_ERROR;
  }
  CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
  CK_FUNCTION_LIST_PTR list = NULL;
  if (get == NULL || get(&list) != CKR_OK || list == NULL) {
    fprintf(stderr, "xks-emulator: %s has no usable C_GetFunctionList\n", path);
    dlclose(dl);
    return CKR_GENERAL_ERROR;
  }
  /* A previous target stays loaded: another thread may still be inside it. */
  target_dl = dl;
  snprintf(target_dl_path, sizeof target_dl_path, "%s", path);
  T = list;
  return CKR_OK;
}

static CK_RV em_C_Initialize(CK_VOID_PTR pInitArgs) {
  CK_C_INITIALIZE_ARGS_PTR args = (CK_C_INITIALIZE_ARGS_PTR)pInitArgs;
  struct config c;
  CK_RV rv;
  pthread_mutex_lock(&init_lock);
  rv = read_config(&c, args != NULL ? (const char *)args->pReserved : NULL);
  if (rv != CKR_OK) goto out;
  cfg = c;
  ctl_set_path(c.control);
  rv = enter("C_Initialize", NOLAT);
  if (rv != CKR_OK) goto out;
  rv = load_target(c.target);
  if (rv != CKR_OK) goto out;
  if (args != NULL) {
    CK_C_INITIALIZE_ARGS fwd = *args;
    fwd.pReserved = NULL;
    rv = T->C_Initialize(&fwd);
  } else {
    rv = T->C_Initialize(NULL);
  }
  if (rv == CKR_OK) sess_forget_all();
out:
  pthread_mutex_unlock(&init_lock);
  return rv;
}

static CK_RV em_C_Finalize(CK_VOID_PTR pReserved) {
  NEED_TARGET();
  CK_RV rv = enter("C_Finalize", NOLAT);
  if (rv != CKR_OK) return rv;
  pthread_mutex_lock(&init_lock);
  rv = T->C_Finalize(pReserved);
  if (rv == CKR_OK) sess_forget_all();
  pthread_mutex_unlock(&init_lock);
  return rv;
}

static CK_RV em_C_GetInfo(CK_INFO_PTR pInfo) {
  NEED_TARGET();
  CK_RV rv = enter("C_GetInfo", NOLAT);
  if (rv != CKR_OK) return rv;
  rv = T->C_GetInfo(pInfo);
  if (rv == CKR_OK && pInfo != NULL) {
    char d[40];
    snprintf(d, sizeof d, "xks emulator (%s)", vendor_names[cfg.vendor]);
    size_t n = strlen(d);
    memset(pInfo->libraryDescription, ' ', sizeof pInfo->libraryDescription);
    memcpy(pInfo->libraryDescription, d, n < sizeof pInfo->libraryDescription ? n : sizeof pInfo->libraryDescription);
  }
  return rv;
}

static CK_RV em_C_CloseSession(CK_SESSION_HANDLE hSession) {
  NEED_TARGET();
  CK_RV rv = enter("C_CloseSession", NOLAT);
  if (rv != CKR_OK) return rv;
  rv = T->C_CloseSession(hSession);
  if (rv == CKR_OK) sess_forget(hSession);
  return rv;
}

static CK_RV em_C_CloseAllSessions(CK_SLOT_ID slotID) {
  NEED_TARGET();
  CK_RV rv = enter("C_CloseAllSessions", NOLAT);
  if (rv == CKR_OK) rv = slot_in(&slotID);
  if (rv != CKR_OK) return rv;
  rv = T->C_CloseAllSessions(slotID);
  /* The table does not know slots: forget every session (only GCM bookkeeping of other slots' sessions is lost). */
  if (rv == CKR_OK) sess_forget_all();
  return rv;
}

/* Luna: a template's CKA_ALLOWED_MECHANISMS naming 0x210B (RFC 5649 to Luna) reaches SoftHSM as 0x210A, or SoftHSM
 * would refuse the key for the very mechanism it was made for. NULL when the template needs no change; else a copy
 * (with its own copy of the value) to free with free_template(). */
static CK_ATTRIBUTE *luna_template(CK_ATTRIBUTE_PTR t, CK_ULONG n) {
  if (cfg.vendor != V_LUNA || t == NULL) return NULL;
  CK_ULONG at = n;
  for (CK_ULONG i = 0; i < n; i++) {
    if (t[i].type == CKA_ALLOWED_MECHANISMS && t[i].pValue != NULL) at = i;
  }
  if (at == n) return NULL;
  CK_ATTRIBUTE *copy = malloc(n * sizeof *copy);
  CK_MECHANISM_TYPE *mechs = malloc(t[at].ulValueLen ? t[at].ulValueLen : 1);
  if (copy == NULL || mechs == NULL) {
    free(copy);
    free(mechs);
    return NULL;
  }
  memcpy(copy, t, n * sizeof *copy);
  memcpy(mechs, t[at].pValue, t[at].ulValueLen);
  for (CK_ULONG i = 0; i < t[at].ulValueLen / sizeof *mechs; i++) {
    if (mechs[i] == MECH_AES_KEY_WRAP_KWP) mechs[i] = MECH_AES_KEY_WRAP_PAD;
  }
  copy[at].pValue = mechs;
  return copy;
}

static void free_template(CK_ATTRIBUTE *copy, CK_ULONG n) {
  if (copy == NULL) return;
  for (CK_ULONG i = 0; i < n; i++) {
    if (copy[i].type == CKA_ALLOWED_MECHANISMS) free(copy[i].pValue);
  }
  free(copy);
}

static CK_RV em_C_CreateObject(CK_SESSION_HANDLE hSession, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount,
                               CK_OBJECT_HANDLE_PTR phObject) {
  NEED_TARGET();
  CK_RV rv = enter("C_CreateObject", NOLAT);
  if (rv != CKR_OK) return rv;
  CK_ATTRIBUTE *mapped = luna_template(pTemplate, ulCount);
  rv = T->C_CreateObject(hSession, mapped ? mapped : pTemplate, ulCount, phObject);
  free_template(mapped, ulCount);
  return rv;
}

static CK_RV em_C_GenerateKey(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_ATTRIBUTE_PTR pTemplate,
                              CK_ULONG ulCount, CK_OBJECT_HANDLE_PTR phKey) {
  NEED_TARGET();
  CK_RV rv = enter("C_GenerateKey", LAT);
  if (rv != CKR_OK) return rv;
  CK_ATTRIBUTE *mapped = luna_template(pTemplate, ulCount);
  rv = T->C_GenerateKey(hSession, pMechanism, mapped ? mapped : pTemplate, ulCount, phKey);
  free_template(mapped, ulCount);
  return rv;
}

/* ---- mechanisms (luna: RFC 5649 under its v3.0 number) -------------------------------------------------------- */

/* Luna: map the caller's mechanism number to the target's; CKR_MECHANISM_INVALID for SoftHSM's own 0x210A. */
static int is_hidden(CK_MECHANISM_TYPE type) {
  for (int i = 0; i < cfg.n_hidden; i++) {
    if (cfg.hidden[i] == type) return 1;
  }
  return 0;
}

static CK_RV map_mechanism(CK_MECHANISM_TYPE *type) {
  if (is_hidden(*type)) return CKR_MECHANISM_INVALID;
  if (cfg.vendor != V_LUNA) return CKR_OK;
  /* Thales Luna HSM 7 SDK reference, "CKM_AES_KWP" (AES key wrap with padding, SP 800-38F KWP / RFC 5649) under
   * the PKCS#11 v3.0 number 0x210B (CKM_AES_KEY_WRAP_KWP); SoftHSM 2.6 implements RFC 5649 as 0x210A. */
  if (*type == MECH_AES_KEY_WRAP_PAD) return CKR_MECHANISM_INVALID;
  if (*type == MECH_AES_KEY_WRAP_KWP) *type = MECH_AES_KEY_WRAP_PAD;
  return CKR_OK;
}

static CK_RV em_C_GetMechanismList(CK_SLOT_ID slotID, CK_MECHANISM_TYPE_PTR pMechanismList, CK_ULONG_PTR pulCount) {
  NEED_TARGET();
  CK_RV rv = enter("C_GetMechanismList", NOLAT);
  if (rv == CKR_OK) rv = slot_in(&slotID);
  if (rv != CKR_OK) return rv;
  if (cfg.vendor != V_LUNA && cfg.n_hidden == 0) return T->C_GetMechanismList(slotID, pMechanismList, pulCount);
  if (pulCount == NULL) return CKR_ARGUMENTS_BAD;
  CK_ULONG n = 0;
  rv = T->C_GetMechanismList(slotID, NULL, &n);
  if (rv != CKR_OK) return rv;
  CK_MECHANISM_TYPE *all = calloc(n + 1, sizeof *all);
  if (all == NULL) return CKR_HOST_MEMORY;
  rv = T->C_GetMechanismList(slotID, all, &n);
  if (rv != CKR_OK) {
    free(all);
    return rv;
  }
  /* Report 0x210B in place of 0x210A, once. */
  CK_ULONG m = 0;
  int have_kwp = 0;
  for (CK_ULONG i = 0; i < n; i++) {
    if (is_hidden(all[i])) continue;
    CK_MECHANISM_TYPE t = cfg.vendor == V_LUNA && all[i] == MECH_AES_KEY_WRAP_PAD ? MECH_AES_KEY_WRAP_KWP : all[i];
    if (t == MECH_AES_KEY_WRAP_KWP) {
      if (have_kwp) continue;
      have_kwp = 1;
    }
    all[m++] = t;
  }
  if (pMechanismList == NULL) {
    *pulCount = m;
  } else if (*pulCount < m) {
    *pulCount = m;
    rv = CKR_BUFFER_TOO_SMALL;
  } else {
    memcpy(pMechanismList, all, m * sizeof *all);
    *pulCount = m;
  }
  free(all);
  return rv;
}

static CK_RV em_C_GetMechanismInfo(CK_SLOT_ID slotID, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR pInfo) {
  NEED_TARGET();
  CK_RV rv = enter("C_GetMechanismInfo", NOLAT);
  if (rv == CKR_OK) rv = slot_in(&slotID);
  if (rv != CKR_OK) return rv;
  rv = map_mechanism(&type);
  if (rv != CKR_OK) return rv;
  return T->C_GetMechanismInfo(slotID, type, pInfo);
}

static CK_RV em_C_WrapKey(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hWrappingKey,
                          CK_OBJECT_HANDLE hKey, CK_BYTE_PTR pWrappedKey, CK_ULONG_PTR pulWrappedKeyLen) {
  NEED_TARGET();
  CK_RV rv = enter("C_WrapKey", NOLAT);
  if (rv != CKR_OK) return rv;
  if (pMechanism == NULL) return T->C_WrapKey(hSession, pMechanism, hWrappingKey, hKey, pWrappedKey, pulWrappedKeyLen);
  CK_MECHANISM m = *pMechanism;
  rv = map_mechanism(&m.mechanism);
  if (rv != CKR_OK) return rv;
  return T->C_WrapKey(hSession, &m, hWrappingKey, hKey, pWrappedKey, pulWrappedKeyLen);
}

static CK_RV em_C_UnwrapKey(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hUnwrappingKey,
                            CK_BYTE_PTR pWrappedKey, CK_ULONG ulWrappedKeyLen, CK_ATTRIBUTE_PTR pTemplate,
                            CK_ULONG ulAttributeCount, CK_OBJECT_HANDLE_PTR phKey) {
  NEED_TARGET();
  CK_RV rv = enter("C_UnwrapKey", NOLAT);
  if (rv != CKR_OK) return rv;
  if (pMechanism == NULL)
    return T->C_UnwrapKey(hSession, pMechanism, hUnwrappingKey, pWrappedKey, ulWrappedKeyLen, pTemplate,
                          ulAttributeCount, phKey);
  CK_MECHANISM m = *pMechanism;
  rv = map_mechanism(&m.mechanism);
  if (rv != CKR_OK) return rv;
  CK_ATTRIBUTE *mapped = luna_template(pTemplate, ulAttributeCount);
  rv = T->C_UnwrapKey(hSession, &m, hUnwrappingKey, pWrappedKey, ulWrappedKeyLen, mapped ? mapped : pTemplate,
                      ulAttributeCount, phKey);
  free_template(mapped, ulAttributeCount);
  return rv;
}

/* ---- attributes ----------------------------------------------------------------------------------------------- */

static CK_RV em_C_GetAttributeValue(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ATTRIBUTE_PTR pTemplate,
                                    CK_ULONG ulCount) {
  NEED_TARGET();
  CK_RV rv = enter("C_GetAttributeValue", LAT);
  if (rv != CKR_OK) return rv;
  CK_RV trv;
  if (ctl_throttled(&trv)) return trv;
  return T->C_GetAttributeValue(hSession, hObject, pTemplate, ulCount);
}

static CK_RV em_C_SetAttributeValue(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ATTRIBUTE_PTR pTemplate,
                                    CK_ULONG ulCount) {
  NEED_TARGET();
  CK_RV rv = enter("C_SetAttributeValue", NOLAT);
  if (rv != CKR_OK) return rv;
  if (cfg.vendor == V_CLOUDHSM && pTemplate != NULL) {
    /* AWS CloudHSM Client SDK 5 user guide, "Modifying PKCS #11 library attributes": only these may change after
     * the object is created. (The page also allows CKA_TOKEN, for a session key becoming a token key only.) */
    static const CK_ATTRIBUTE_TYPE allowed[] = {CKA_LABEL, CKA_ENCRYPT, CKA_DECRYPT, CKA_SIGN,
                                                CKA_VERIFY, CKA_WRAP, CKA_UNWRAP, CKA_SENSITIVE,
                                                CKA_DERIVE, CKA_TRUSTED, CKA_WRAP_WITH_TRUSTED};
    for (CK_ULONG i = 0; i < ulCount; i++) {
      int ok = 0;
      for (size_t j = 0; j < sizeof allowed / sizeof allowed[0]; j++)
        if (pTemplate[i].type == allowed[j]) ok = 1;
      if (!ok) return CKR_ATTRIBUTE_READ_ONLY;
    }
  }
  return T->C_SetAttributeValue(hSession, hObject, pTemplate, ulCount);
}

/* ---- encryption ----------------------------------------------------------------------------------------------- */

/* Both CK_GCM_PARAMS layouts (v2.40 with ulIvBits, 6 words; v2.30 without, 5 words) start with pIv, ulIvLen. */
static int gcm_params_ok(const CK_MECHANISM *m) {
  return m->mechanism == CKM_AES_GCM && m->pParameter != NULL &&
         (m->ulParameterLen == sizeof(CK_GCM_PARAMS) || m->ulParameterLen == 5 * sizeof(CK_ULONG));
}

static CK_RV em_C_EncryptInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey) {
  NEED_TARGET();
  CK_RV rv = enter("C_EncryptInit", NOLAT);
  if (rv != CKR_OK) return rv;
  if (pMechanism == NULL) {
    rv = T->C_EncryptInit(hSession, pMechanism, hKey);
    sess_set_enc(hSession, 0, NULL);
    return rv;
  }
  CK_MECHANISM m = *pMechanism;
  rv = map_mechanism(&m.mechanism);
  if (rv != CKR_OK) return rv;
  int gcm = gcm_params_ok(&m);
  CK_BYTE luna_iv[GCM_IV_BYTES];
  CK_GCM_PARAMS luna_params;
  int have_luna_iv = 0;
  if (gcm && (cfg.vendor == V_CLOUDHSM || cfg.vendor == V_NSHIELD)) {
    CK_GCM_PARAMS *p = (CK_GCM_PARAMS *)m.pParameter;
    /* AWS CloudHSM Client SDK 5 user guide, "Supported mechanisms for the PKCS #11 library", CKM_AES_GCM footnote:
     * the HSM does not accept an IV from the application; it writes the 12-byte IV it generated into the pIv
     * buffer of CK_GCM_PARAMS. nShield: Entrust's PKCS#11 library generates the GCM IV in the module when given a
     * zero IV and returns it in the parameter (as recorded in this repository's hsm/nshield.yaml). */
    if (cfg.vendor == V_CLOUDHSM && p->ulIvLen != GCM_IV_BYTES) return CKR_MECHANISM_PARAM_INVALID;
    if (p->pIv == NULL || p->ulIvLen == 0) return CKR_MECHANISM_PARAM_INVALID;
    rv = T->C_GenerateRandom(hSession, p->pIv, p->ulIvLen);
    if (rv != CKR_OK) return rv;
  } else if (gcm && cfg.vendor == V_LUNA) {
    /* Thales Luna HSM 7 SDK reference, "CKM_AES_GCM": in FIPS mode the HSM generates the IV and returns it after the
     * ciphertext and tag (96 bits when ulIvBits is 96, firmware 7.9.3 and later). The caller's IV is ignored. */
    memset(&luna_params, 0, sizeof luna_params);
    memcpy(&luna_params, m.pParameter, m.ulParameterLen);
    rv = T->C_GenerateRandom(hSession, luna_iv, GCM_IV_BYTES);
    if (rv != CKR_OK) return rv;
    luna_params.pIv = luna_iv;
    luna_params.ulIvLen = GCM_IV_BYTES;
    if (m.ulParameterLen == sizeof(CK_GCM_PARAMS)) luna_params.ulIvBits = GCM_IV_BYTES * 8;
    m.pParameter = &luna_params;
    have_luna_iv = 1;
  }
  rv = T->C_EncryptInit(hSession, &m, hKey);
  if (rv == CKR_OK) sess_set_enc(hSession, gcm, have_luna_iv ? luna_iv : NULL);
  return rv;
}

/* Luna: run `call` (C_Encrypt or C_EncryptFinal on the target) with room for the 12 IV bytes after its output. */
struct luna_call {
  CK_SESSION_HANDLE h;
  CK_BYTE_PTR in;
  CK_ULONG in_len;
  int final;
};
static CK_RV luna_target_call(const struct luna_call *c, CK_BYTE_PTR out, CK_ULONG_PTR out_len) {
  if (c->final) return T->C_EncryptFinal(c->h, out, out_len);
  return T->C_Encrypt(c->h, c->in, c->in_len, out, out_len);
}

static CK_RV luna_append_iv(const struct luna_call *c, const CK_BYTE *iv, CK_BYTE_PTR out, CK_ULONG_PTR out_len) {
  if (out_len == NULL) return CKR_ARGUMENTS_BAD;
  CK_ULONG need = 0;
  CK_RV rv = luna_target_call(c, NULL, &need);
  if (rv != CKR_OK) {
    sess_set_enc(c->h, 0, NULL);
    return rv;
  }
  if (out == NULL) {
    *out_len = need + GCM_IV_BYTES;
    return CKR_OK;
  }
  if (*out_len < need + GCM_IV_BYTES) {
    *out_len = need + GCM_IV_BYTES;
    return CKR_BUFFER_TOO_SMALL;
  }
  CK_ULONG len = *out_len - GCM_IV_BYTES;
  rv = luna_target_call(c, out, &len);
  if (rv == CKR_OK) {
    memcpy(out + len, iv, GCM_IV_BYTES);
    *out_len = len + GCM_IV_BYTES;
  } else if (rv == CKR_BUFFER_TOO_SMALL) {
    *out_len = len + GCM_IV_BYTES;
    return rv;
  }
  sess_set_enc(c->h, 0, NULL);
  return rv;
}

static CK_RV em_C_Encrypt(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pEncryptedData,
                          CK_ULONG_PTR pulEncryptedDataLen) {
  NEED_TARGET();
  CK_RV rv = enter("C_Encrypt", LAT);
  if (rv != CKR_OK) {
    end_target_op(OP_ENC, hSession);
    return rv;
  }
  struct sess s = sess_get(hSession);
  /* AWS CloudHSM, "Known issues for the PKCS #11 library": C_Encrypt and C_Decrypt buffers cannot exceed 16 KB
   * with CKM_AES_GCM. */
  if (s.enc_gcm && cfg.vendor == V_CLOUDHSM && ulDataLen > CLOUDHSM_GCM_MAX) {
    end_target_op(OP_ENC, hSession);
    return CKR_DATA_LEN_RANGE;
  }
  if (s.enc_gcm && s.has_iv && cfg.vendor == V_LUNA) {
    struct luna_call c = {hSession, pData, ulDataLen, 0};
    return luna_append_iv(&c, s.iv, pEncryptedData, pulEncryptedDataLen);
  }
  rv = T->C_Encrypt(hSession, pData, ulDataLen, pEncryptedData, pulEncryptedDataLen);
  if (s.enc_gcm && op_ended(rv, pEncryptedData)) sess_set_enc(hSession, 0, NULL);
  return rv;
}

static CK_RV em_C_EncryptUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen,
                                CK_BYTE_PTR pEncryptedPart, CK_ULONG_PTR pulEncryptedPartLen) {
  NEED_TARGET();
  CK_RV rv = enter("C_EncryptUpdate", NOLAT);
  if (rv != CKR_OK) {
    end_target_op(OP_ENC, hSession);
    return rv;
  }
  rv = T->C_EncryptUpdate(hSession, pPart, ulPartLen, pEncryptedPart, pulEncryptedPartLen);
  if (rv != CKR_OK && rv != CKR_BUFFER_TOO_SMALL) sess_set_enc(hSession, 0, NULL);
  return rv;
}

static CK_RV em_C_EncryptFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pLastEncryptedPart,
                               CK_ULONG_PTR pulLastEncryptedPartLen) {
  NEED_TARGET();
  CK_RV rv = enter("C_EncryptFinal", NOLAT);
  if (rv != CKR_OK) {
    end_target_op(OP_ENC, hSession);
    return rv;
  }
  struct sess s = sess_get(hSession);
  if (s.enc_gcm && s.has_iv && cfg.vendor == V_LUNA) {
    struct luna_call c = {hSession, NULL, 0, 1};
    return luna_append_iv(&c, s.iv, pLastEncryptedPart, pulLastEncryptedPartLen);
  }
  rv = T->C_EncryptFinal(hSession, pLastEncryptedPart, pulLastEncryptedPartLen);
  if (s.enc_gcm && op_ended(rv, pLastEncryptedPart)) sess_set_enc(hSession, 0, NULL);
  return rv;
}

/* ---- decryption ----------------------------------------------------------------------------------------------- */

static CK_RV em_C_DecryptInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey) {
  NEED_TARGET();
  CK_RV rv = enter("C_DecryptInit", NOLAT);
  if (rv != CKR_OK) return rv;
  if (pMechanism == NULL) {
    rv = T->C_DecryptInit(hSession, pMechanism, hKey);
    sess_set_dec(hSession, 0);
    return rv;
  }
  CK_MECHANISM m = *pMechanism;
  rv = map_mechanism(&m.mechanism);
  if (rv != CKR_OK) return rv;
  rv = T->C_DecryptInit(hSession, &m, hKey);
  if (rv == CKR_OK) sess_set_dec(hSession, gcm_params_ok(&m));
  return rv;
}

/* nShield: a GCM tag that does not verify is CKR_FUNCTION_FAILED (AWS's aws-kms-xks-proxy sample maps that code to
 * InvalidCiphertextException for nShield); SoftHSM says CKR_GENERAL_ERROR (2.6) or CKR_ENCRYPTED_DATA_INVALID. */
static CK_RV nshield_gcm_rv(CK_RV rv) {
  if (cfg.vendor == V_NSHIELD && (rv == CKR_GENERAL_ERROR || rv == CKR_ENCRYPTED_DATA_INVALID))
    return CKR_FUNCTION_FAILED;
  return rv;
}

static CK_RV em_C_Decrypt(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedData, CK_ULONG ulEncryptedDataLen,
                          CK_BYTE_PTR pData, CK_ULONG_PTR pulDataLen) {
  NEED_TARGET();
  CK_RV rv = enter("C_Decrypt", LAT);
  if (rv != CKR_OK) {
    end_target_op(OP_DEC, hSession);
    return rv;
  }
  struct sess s = sess_get(hSession);
  /* AWS CloudHSM, "Known issues for the PKCS #11 library": 16 KB buffer limit with CKM_AES_GCM. */
  if (s.dec_gcm && cfg.vendor == V_CLOUDHSM && ulEncryptedDataLen > CLOUDHSM_GCM_MAX) {
    end_target_op(OP_DEC, hSession);
    return CKR_DATA_LEN_RANGE;
  }
  rv = T->C_Decrypt(hSession, pEncryptedData, ulEncryptedDataLen, pData, pulDataLen);
  if (s.dec_gcm) {
    if (op_ended(rv, pData)) sess_set_dec(hSession, 0);
    rv = nshield_gcm_rv(rv);
  }
  return rv;
}

static CK_RV em_C_DecryptUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedPart, CK_ULONG ulEncryptedPartLen,
                                CK_BYTE_PTR pPart, CK_ULONG_PTR pulPartLen) {
  NEED_TARGET();
  CK_RV rv = enter("C_DecryptUpdate", NOLAT);
  if (rv != CKR_OK) {
    end_target_op(OP_DEC, hSession);
    return rv;
  }
  rv = T->C_DecryptUpdate(hSession, pEncryptedPart, ulEncryptedPartLen, pPart, pulPartLen);
  if (rv != CKR_OK && rv != CKR_BUFFER_TOO_SMALL) {
    struct sess s = sess_get(hSession);
    sess_set_dec(hSession, 0);
    if (s.dec_gcm) rv = nshield_gcm_rv(rv);
  }
  return rv;
}

static CK_RV em_C_DecryptFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pLastPart, CK_ULONG_PTR pulLastPartLen) {
  NEED_TARGET();
  CK_RV rv = enter("C_DecryptFinal", NOLAT);
  if (rv != CKR_OK) {
    end_target_op(OP_DEC, hSession);
    return rv;
  }
  struct sess s = sess_get(hSession);
  rv = T->C_DecryptFinal(hSession, pLastPart, pulLastPartLen);
  if (s.dec_gcm) {
    if (op_ended(rv, pLastPart)) sess_set_dec(hSession, 0);
    rv = nshield_gcm_rv(rv);
  }
  return rv;
}

/* ---- the function list ---------------------------------------------------------------------------------------- */

static CK_FUNCTION_LIST function_list = {
    .version = {2, 40},
    .C_Initialize = em_C_Initialize,
    .C_Finalize = em_C_Finalize,
    .C_GetInfo = em_C_GetInfo,
    .C_GetFunctionList = C_GetFunctionList,
    .C_GetSlotList = em_C_GetSlotList,
    .C_GetSlotInfo = em_C_GetSlotInfo,
    .C_GetTokenInfo = em_C_GetTokenInfo,
    .C_GetMechanismList = em_C_GetMechanismList,
    .C_GetMechanismInfo = em_C_GetMechanismInfo,
    .C_InitToken = em_C_InitToken,
    .C_InitPIN = em_C_InitPIN,
    .C_SetPIN = em_C_SetPIN,
    .C_OpenSession = em_C_OpenSession,
    .C_CloseSession = em_C_CloseSession,
    .C_CloseAllSessions = em_C_CloseAllSessions,
    .C_GetSessionInfo = em_C_GetSessionInfo,
    .C_GetOperationState = em_C_GetOperationState,
    .C_SetOperationState = em_C_SetOperationState,
    .C_Login = em_C_Login,
    .C_Logout = em_C_Logout,
    .C_CreateObject = em_C_CreateObject,
    .C_CopyObject = em_C_CopyObject,
    .C_DestroyObject = em_C_DestroyObject,
    .C_GetObjectSize = em_C_GetObjectSize,
    .C_GetAttributeValue = em_C_GetAttributeValue,
    .C_SetAttributeValue = em_C_SetAttributeValue,
    .C_FindObjectsInit = em_C_FindObjectsInit,
    .C_FindObjects = em_C_FindObjects,
    .C_FindObjectsFinal = em_C_FindObjectsFinal,
    .C_EncryptInit = em_C_EncryptInit,
    .C_Encrypt = em_C_Encrypt,
    .C_EncryptUpdate = em_C_EncryptUpdate,
    .C_EncryptFinal = em_C_EncryptFinal,
    .C_DecryptInit = em_C_DecryptInit,
    .C_Decrypt = em_C_Decrypt,
    .C_DecryptUpdate = em_C_DecryptUpdate,
    .C_DecryptFinal = em_C_DecryptFinal,
    .C_DigestInit = em_C_DigestInit,
    .C_Digest = em_C_Digest,
    .C_DigestUpdate = em_C_DigestUpdate,
    .C_DigestKey = em_C_DigestKey,
    .C_DigestFinal = em_C_DigestFinal,
    .C_SignInit = em_C_SignInit,
    .C_Sign = em_C_Sign,
    .C_SignUpdate = em_C_SignUpdate,
    .C_SignFinal = em_C_SignFinal,
    .C_SignRecoverInit = em_C_SignRecoverInit,
    .C_SignRecover = em_C_SignRecover,
    .C_VerifyInit = em_C_VerifyInit,
    .C_Verify = em_C_Verify,
    .C_VerifyUpdate = em_C_VerifyUpdate,
    .C_VerifyFinal = em_C_VerifyFinal,
    .C_VerifyRecoverInit = em_C_VerifyRecoverInit,
    .C_VerifyRecover = em_C_VerifyRecover,
    .C_DigestEncryptUpdate = em_C_DigestEncryptUpdate,
    .C_DecryptDigestUpdate = em_C_DecryptDigestUpdate,
    .C_SignEncryptUpdate = em_C_SignEncryptUpdate,
    .C_DecryptVerifyUpdate = em_C_DecryptVerifyUpdate,
    .C_GenerateKey = em_C_GenerateKey,
    .C_GenerateKeyPair = em_C_GenerateKeyPair,
    .C_WrapKey = em_C_WrapKey,
    .C_UnwrapKey = em_C_UnwrapKey,
    .C_DeriveKey = em_C_DeriveKey,
    .C_SeedRandom = em_C_SeedRandom,
    .C_GenerateRandom = em_C_GenerateRandom,
    .C_GetFunctionStatus = em_C_GetFunctionStatus,
    .C_CancelFunction = em_C_CancelFunction,
    .C_WaitForSlotEvent = em_C_WaitForSlotEvent,
};

EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList) {
  if (ppFunctionList == NULL) return CKR_ARGUMENTS_BAD;
  *ppFunctionList = &function_list;
  return CKR_OK;
}
