/* SPDX-License-Identifier: Apache-2.0 */
/*
 * layout.bpf.c: the start-up self-check of the BTF offsets.
 *
 * th_layout_selfcheck is never attached: user space runs it once with
 * BPF_PROG_TEST_RUN, which runs a raw tracepoint program in the calling
 * task, and compares what it read through the offsets (tgid, ppid, uid,
 * cgroup id, cwd) with /proc (agent/capture/layout_check.py). Offsets BTF
 * gave but that read the wrong thing turn enrichment off (th_control's
 * enriched stays 0) instead of filling records with garbage.
 */
#include "tracehound.h"

BPF_ARRAY(th_layout_check, struct th_layout_check, 1);

int th_layout_selfcheck(struct bpf_raw_tracepoint_args *ctx)
{
    u32 zero = 0;
    struct th_layout_check *out = th_layout_check.lookup(&zero);
    if (!out)
        return 0;
    out->ran = 1;
    out->compiled = TH_LAYOUT;
    out->cgroup_helper = bpf_get_current_cgroup_id();
#if TH_LAYOUT
    u64 task = th_current_task();
    out->tgid = th_ku32(task, TH_OFF_TASK_STRUCT_TGID);
    out->ppid = th_task_ppid(task);
    out->uid = th_ku32(th_kptr(task, TH_OFF_TASK_STRUCT_REAL_CRED), TH_OFF_CRED_UID);
    u64 cgroup = th_kptr(th_kptr(task, TH_OFF_TASK_STRUCT_CGROUPS), TH_OFF_CSS_SET_DFL_CGRP);
    u64 kn = th_kptr(cgroup, TH_OFF_CGROUP_KN);
    u64 id = 0;
    if (kn)
        bpf_probe_read_kernel(&id, sizeof(id), (const void *)(kn + TH_OFF_KERNFS_NODE_ID));
    out->cgroup_id = id;
    struct th_path_result cwd = {};
    th_walk_cwd(0, &cwd);
    struct th_path_scratch *scratch = th_path_bufs.lookup(&zero);
    if (!scratch)
        return 0;
    out->cwd_flags = cwd.flags;
    out->cwd_len = cwd.len;
    if (cwd.len && cwd.len <= TH_PATH_MAX)
        bpf_probe_read_kernel(out->cwd, cwd.len & (TH_PATH_MAX - 1),
                              scratch->buf + (cwd.start & (TH_PATH_MAX - 1)));
#endif
    return 0;
}
