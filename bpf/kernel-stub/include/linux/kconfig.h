/* Forced in first by bcc: the kernel config and compiler macros its
 * built-in headers test. See ../../README.md. */
#define CONFIG_BPF_SYSCALL 1
#define __always_inline inline __attribute__((always_inline))
