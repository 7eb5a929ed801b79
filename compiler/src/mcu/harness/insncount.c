/* A QEMU TCG plugin that counts executed guest instructions exactly and
 * records the count each time the guest executes the instruction at
 * `mark=ADDR` (mnet's marker function). At exit it prints `total N` and one
 * `mark N` line per execution of the marker, in order, through
 * qemu_plugin_outs (shown with `-d plugin`).
 *
 * Counting is inline (QEMU adds each translation block's instruction count
 * when the block starts), so a block's count lands when it is entered; the
 * marker is a function of its own, so its block starts at the marker. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu-plugin.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;

#define MAX_MARKS (1u << 20)

static uint64_t total;
static uint64_t mark_addr = UINT64_MAX;
static uint64_t *marks;
static size_t n_marks;
static int overflow;

static void on_mark(unsigned int vcpu, void *userdata) {
    (void)vcpu;
    (void)userdata;
    if (n_marks < MAX_MARKS) {
        marks[n_marks++] = total;
    } else {
        overflow = 1;
    }
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    size_t n = qemu_plugin_tb_n_insns(tb), i;
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &total, n);
    for (i = 0; i < n; ++i) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        if (qemu_plugin_insn_vaddr(insn) == mark_addr) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_mark, QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
    }
}

static void at_exit(qemu_plugin_id_t id, void *userdata) {
    char line[64];
    size_t i;
    (void)id;
    (void)userdata;
    snprintf(line, sizeof line, "total %" PRIu64 "\n", total);
    qemu_plugin_outs(line);
    for (i = 0; i < n_marks; ++i) {
        snprintf(line, sizeof line, "mark %" PRIu64 "\n", marks[i]);
        qemu_plugin_outs(line);
    }
    if (overflow) {
        qemu_plugin_outs("overflow\n");
    }
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
    int i;
    (void)info;
    for (i = 0; i < argc; ++i) {
        if (strncmp(argv[i], "mark=", 5) == 0) {
            mark_addr = strtoull(argv[i] + 5, NULL, 0);
        }
    }
    if (mark_addr == UINT64_MAX) {
        fprintf(stderr, "insncount: needs mark=ADDR\n");
        return -1;
    }
    marks = calloc(MAX_MARKS, sizeof *marks);
    if (!marks) {
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
