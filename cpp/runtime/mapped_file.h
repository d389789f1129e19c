// A read-only view of a whole file in memory (POSIX mmap), owned: unmapped when the owner goes.
// The vision encoder's CPU weights point straight into it, as llama.cpp's models do, so loading copies nothing
// and the pages come from the OS's file cache when first touched.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace mcv {

class MappedFile {
public:
    // nullptr where mapping is unavailable (another OS, or the call failed): the caller then reads the file
    static std::unique_ptr<MappedFile> open(const std::string & path);
    ~MappedFile();
    MappedFile(const MappedFile &) = delete;
    MappedFile & operator=(const MappedFile &) = delete;

    const char * data() const { return static_cast<const char *>(addr_); }
    size_t size() const { return size_; }
    // drop the whole pages inside [p, p + n) from memory (the next read, if any, comes from the file again)
    void release(const void * p, size_t n) const;

private:
    MappedFile(void * addr, size_t size) : addr_(addr), size_(size) {}
    void * addr_;
    size_t size_;
};

}  // namespace mcv
