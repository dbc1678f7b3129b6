/* The integer types bcc's built-in headers and tracefs's tracepoint formats
 * name (bcc builds each tracepoint's argument struct from its format file,
 * with the kernel's type names). See ../../README.md. */
#ifndef TH_STUB_LINUX_TYPES_H
#define TH_STUB_LINUX_TYPES_H
typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef signed short __s16;
typedef unsigned int __u32;
typedef signed int __s32;
typedef unsigned long long __u64;
typedef signed long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u64 __be64;
typedef __u16 __le16;
typedef __u32 __le32;
typedef __u64 __le64;
typedef __u16 __sum16;
typedef __u32 __wsum;
typedef __u64 __attribute__((aligned(8))) __aligned_u64;
typedef __u8 u8;
typedef __s8 s8;
typedef __u16 u16;
typedef __s16 s16;
typedef __u32 u32;
typedef __s32 s32;
typedef __u64 u64;
typedef __s64 s64;
typedef unsigned long size_t;
typedef long ssize_t;
typedef unsigned long uintptr_t;
typedef _Bool bool;
typedef int pid_t;
typedef unsigned int uid_t;
typedef unsigned int gid_t;
typedef unsigned short umode_t;
typedef long long loff_t;
typedef long off_t;
typedef unsigned int dev_t;
typedef unsigned long ino_t;
typedef unsigned int gfp_t;
typedef int clockid_t;
typedef long long time64_t;
#define true 1
#define false 0
#define NULL ((void *)0)
#endif
