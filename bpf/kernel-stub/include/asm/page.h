/* BPF_RINGBUF_OUTPUT sizes rings in pages. See ../../README.md. */
#define PAGE_SIZE 4096
