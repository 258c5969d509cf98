/*
 * The disk's own durable rate for small files, the reference of bench.sh's
 * `small` section: THREADS threads share COUNT files of SIZE bytes; each
 * file is written to a temp name in DIR/tmp, fsynced, renamed into
 * DIR/files and then DIR/files is fsynced: the same steps that make one
 * Spillway upload durable, without HTTP and without the index.
 *
 *   durable_rate DIR COUNT THREADS SIZE   ->  "RESULT files seconds"
 *
 * C rather than Python: the same loop in Python (threads, os.open/write/
 * fsync/rename) measured about the same rate here, since fsync dominates,
 * but spent ~40-50 us of user CPU per file in the interpreter, serialised
 * by the GIL, against ~2 us for this program. At the ~3,000 files/s this
 * reference reached before, that is an eighth of the time on one core, and
 * more on a faster disk: the reference would start to measure Python. C
 * keeps it the disk's, and cc is on the machine (the script compiles it).
 *
 * Every file gets distinct bytes (its number stamped in its first bytes),
 * so a filesystem that compresses or deduplicates gains nothing either.
 * Build: cc -O2 -pthread -o durable_rate durable_rate.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *dir;
static long count, size;
static atomic_long next_file;
static char *random_body;

static void fail(const char *what, const char *path) {
    fprintf(stderr, "durable_rate: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static void *worker(void *arg) {
    (void)arg;
    char tmp[4096], dst[4096], files[4096];
    char *buf = malloc(size);
    if (!buf) fail("malloc", "");
    memcpy(buf, random_body, size);
    snprintf(files, sizeof files, "%s/files", dir);
    for (;;) {
        long i = atomic_fetch_add(&next_file, 1);
        if (i >= count) break;
        int n = snprintf(buf, size < 32 ? size : 32, "durable-rate %018ld", i);
        (void)n;
        snprintf(tmp, sizeof tmp, "%s/tmp/%ld.part", dir, i);
        snprintf(dst, sizeof dst, "%s/files/%ld", dir, i);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) fail("open", tmp);
        for (long off = 0; off < size;) {
            ssize_t w = write(fd, buf + off, size - off);
            if (w < 0) {
                if (errno == EINTR) continue;
                fail("write", tmp);
            }
            off += w;
        }
        if (fsync(fd) != 0) fail("fsync", tmp);
        if (close(fd) != 0) fail("close", tmp);
        if (rename(tmp, dst) != 0) fail("rename", dst);
        int dfd = open(files, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) fail("open", files);
        if (fsync(dfd) != 0) fail("fsync", files);
        close(dfd);
    }
    free(buf);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: durable_rate DIR COUNT THREADS SIZE\n");
        return 2;
    }
    dir = argv[1];
    count = atol(argv[2]);
    long threads = atol(argv[3]);
    size = atol(argv[4]);
    if (count <= 0 || threads <= 0 || threads > 1024 || size <= 0) {
        fprintf(stderr, "durable_rate: COUNT, THREADS and SIZE must be > 0\n");
        return 2;
    }
    char path[4096];
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) fail("mkdir", dir);
    snprintf(path, sizeof path, "%s/tmp", dir);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) fail("mkdir", path);
    snprintf(path, sizeof path, "%s/files", dir);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) fail("mkdir", path);
    random_body = malloc(size);
    if (!random_body) fail("malloc", "");
    int r = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (r < 0 || read(r, random_body, size) != size) fail("read", "/dev/urandom");
    close(r);

    pthread_t *tids = calloc(threads, sizeof *tids);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long t = 0; t < threads; t++)
        if (pthread_create(&tids[t], NULL, worker, NULL) != 0) fail("pthread_create", "");
    for (long t = 0; t < threads; t++) pthread_join(tids[t], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("RESULT %ld %.6f\n", count, s);
    return 0;
}
