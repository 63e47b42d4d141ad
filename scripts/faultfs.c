/* A fault-injection shim for the disk-fault runs (issue 20, part 4), loaded with
 * LD_PRELOAD into the ledger's process: writes and syncs of files under $FAULTFS_DIR
 * fail or come short while the file named by $FAULTFS_CTL holds a mode:
 *
 *   eio    every write, pwrite, writev and fsync/fdatasync fails with EIO;
 *   short  every write of more than one byte writes only half (the caller must loop);
 *   (absent or anything else: calls pass through).
 *
 * It counts what it did into $FAULTFS_CTL.count ("eio N short N"). Written by hand
 * because it is a few dozen lines with no library to speak of; built by
 * scripts/disk-faults with `gcc -shared -fPIC -O2 -o faultfs.so faultfs.c -ldl`. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum mode { PASS, EIO_MODE, SHORT_MODE };

static long counts[3];

static enum mode current_mode(void) {
    const char *ctl = getenv("FAULTFS_CTL");
    if (!ctl) return PASS;
    FILE *f = fopen(ctl, "r");
    if (!f) return PASS;
    char buf[16] = {0};
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    if (strncmp(buf, "eio", 3) == 0) return EIO_MODE;
    if (strncmp(buf, "short", 5) == 0) return SHORT_MODE;
    return PASS;
}

/* Whether fd is a file under $FAULTFS_DIR (asked only while a mode is on). */
static int under_dir(int fd) {
    const char *dir = getenv("FAULTFS_DIR");
    if (!dir) return 0;
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    return strncmp(path, dir, strlen(dir)) == 0;
}

static void record(enum mode m) {
    __atomic_add_fetch(&counts[m], 1, __ATOMIC_RELAXED);
    const char *ctl = getenv("FAULTFS_CTL");
    if (!ctl) return;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s.count", ctl);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "eio %ld short %ld\n", counts[EIO_MODE], counts[SHORT_MODE]);
        fclose(f);
    }
}

/* The mode that applies to a call on fd: PASS for files elsewhere. */
static enum mode fault_for(int fd) {
    enum mode m = current_mode();
    if (m == PASS || !under_dir(fd)) return PASS;
    return m;
}

ssize_t write(int fd, const void *buf, size_t n) {
    static ssize_t (*real)(int, const void *, size_t);
    if (!real) real = dlsym(RTLD_NEXT, "write");
    enum mode m = fd > 2 ? fault_for(fd) : PASS;
    if (m == EIO_MODE) { record(m); errno = EIO; return -1; }
    if (m == SHORT_MODE && n > 1) { record(m); n /= 2; }
    return real(fd, buf, n);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real) real = dlsym(RTLD_NEXT, "pwrite64");
    enum mode m = fault_for(fd);
    if (m == EIO_MODE) { record(m); errno = EIO; return -1; }
    if (m == SHORT_MODE && n > 1) { record(m); n /= 2; }
    return real(fd, buf, n, off);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    return pwrite64(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int count) {
    static ssize_t (*real)(int, const struct iovec *, int);
    if (!real) real = dlsym(RTLD_NEXT, "writev");
    enum mode m = fd > 2 ? fault_for(fd) : PASS;
    if (m == EIO_MODE) { record(m); errno = EIO; return -1; }
    if (m == SHORT_MODE && count > 0 && iov[0].iov_len > 1) {
        record(m);
        struct iovec half = { iov[0].iov_base, iov[0].iov_len / 2 };
        return real(fd, &half, 1);
    }
    return real(fd, iov, count);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "fsync");
    if (fault_for(fd) == EIO_MODE) { record(EIO_MODE); errno = EIO; return -1; }
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "fdatasync");
    if (fault_for(fd) == EIO_MODE) { record(EIO_MODE); errno = EIO; return -1; }
    return real(fd);
}
