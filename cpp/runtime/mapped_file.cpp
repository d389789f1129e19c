#include "runtime/mapped_file.h"

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define MCV_HAVE_MMAP 1
#endif

#include <cstdint>

namespace mcv {

std::unique_ptr<MappedFile> MappedFile::open(const std::string & path) {
#ifdef MCV_HAVE_MMAP
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) return nullptr;
    struct stat st{};
    if (fstat(fd, &st) != 0 || st.st_size <= 0) {
        ::close(fd);
        return nullptr;
    }
    const size_t size = size_t(st.st_size);
    // private and writable: nothing writes weights, but a write would then touch a private copy, not the file
    void * addr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    ::close(fd);  // the mapping keeps the file
    if (addr == MAP_FAILED) return nullptr;
    return std::unique_ptr<MappedFile>(new MappedFile(addr, size));
#else
    (void)path;
    return nullptr;
#endif
}

void MappedFile::release(const void * p, size_t n) const {
#ifdef MCV_HAVE_MMAP
    const auto page = uintptr_t(sysconf(_SC_PAGESIZE));
    const uintptr_t lo = (uintptr_t(p) + page - 1) / page * page, hi = (uintptr_t(p) + n) / page * page;
    const auto base = uintptr_t(addr_);
    if (page > 0 && lo < hi && lo >= base && hi <= base + size_) {
        madvise(reinterpret_cast<void *>(lo), hi - lo, MADV_DONTNEED);  // advice: a failure changes nothing
    }
#else
    (void)p;
    (void)n;
#endif
}

MappedFile::~MappedFile() {
#ifdef MCV_HAVE_MMAP
    munmap(addr_, size_);
#endif
}

}  // namespace mcv
