// A standalone program around one kernel source, for the sanitizer builds (a TSan or ASan
// library loaded into Python can crash). tests/cuda_emu/__init__.py writes a batch of launches
// to a file:
//
//   "EMU2", number of buffers, each buffer's size and bytes, number of launches, then per
//   launch: kernel index, grid[3], block[3], shared_mem, block order, order seed, nargs, and per
//   argument its kind (0 null pointer, 1 a buffer: its index, 2 a value: its size and bytes).
//
// Every buffer gets its own malloc of exactly its size, so AddressSanitizer sees a read or
// write one element past an array. After the launches the buffers are written, in order, to
// the output file; a launch error goes to stderr with exit status 3.
#include <chrono>
#include <vector>

namespace emu_driver {

template <class T> static T get(FILE* f) {
    T v{};
    if (std::fread(&v, sizeof v, 1, f) != 1) {
        std::fprintf(stderr, "cuda_emu driver: truncated launch file\n");
        std::exit(2);
    }
    return v;
}

}  // namespace emu_driver

EMU_ENTRY_POINTS

int main(int argc, char** argv) {
    using namespace emu_driver;
    if (argc == 2 && std::strcmp(argv[1], "--signatures") == 0) {   // name, then sizes (p: pointer)
        for (int k = 0; k < ::emu::g_nkernels; ++k) {
            const ::emu::KernelInfo& ki = ::emu::g_kernels[k];
            std::printf("%s", ki.name);
            for (int i = 0; i < ki.nargs; ++i) std::printf(" %zu%s", ki.sizes[i], ki.is_ptr[i] ? "p" : "");
            std::printf("\n");
        }
        return 0;
    }
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s launch-file output-file\n", argv[0]);
        return 2;
    }
    FILE* in = std::fopen(argv[1], "rb");
    if (!in) { std::perror(argv[1]); return 2; }
    char magic[4];
    if (std::fread(magic, 1, 4, in) != 4 || std::memcmp(magic, "EMU2", 4) != 0) {
        std::fprintf(stderr, "cuda_emu driver: not a launch file\n");
        return 2;
    }
    unsigned long long nbuf = get<unsigned long long>(in);
    std::vector<void*> buffers(nbuf);
    std::vector<unsigned long long> sizes(nbuf);
    for (unsigned long long i = 0; i < nbuf; ++i) {
        sizes[i] = get<unsigned long long>(in);
        buffers[i] = std::malloc(sizes[i] ? sizes[i] : 1);
        if (sizes[i] && std::fread(buffers[i], 1, sizes[i], in) != sizes[i]) {
            std::fprintf(stderr, "cuda_emu driver: truncated buffer\n");
            return 2;
        }
    }
    int nlaunch = get<int>(in);
    for (int launch = 0; launch < nlaunch; ++launch) {
        int k = get<int>(in);
        unsigned grid[3], block[3];
        for (auto& g : grid) g = get<unsigned>(in);
        for (auto& b : block) b = get<unsigned>(in);
        unsigned long long shmem = get<unsigned long long>(in);
        int order = get<int>(in);
        unsigned long long seed = get<unsigned long long>(in);
        int nargs = get<int>(in);
        std::vector<unsigned long long> values(static_cast<size_t>(nargs) * 2 + 2, 0);   // 16 bytes each
        std::vector<void*> args(static_cast<size_t>(nargs) + 1);
        for (int i = 0; i < nargs; ++i) {
            unsigned char kind = get<unsigned char>(in);
            void** slot = reinterpret_cast<void**>(&values[2 * i]);
            if (kind == 0) {
                *slot = nullptr;
            } else if (kind == 1) {
                *slot = buffers.at(get<unsigned long long>(in));
            } else {
                unsigned long long n = get<unsigned long long>(in);
                if (n > 16 || std::fread(&values[2 * i], 1, n, in) != n) {
                    std::fprintf(stderr, "cuda_emu driver: bad value\n");
                    return 2;
                }
            }
            args[i] = &values[2 * i];
        }
        if (k < 0 || k >= ::emu::g_nkernels || ::emu::g_kernels[k].nargs != nargs) {
            std::fprintf(stderr, "cuda_emu driver: kernel %d with %d arguments does not exist\n", k, nargs);
            return 2;
        }
        emu_set_block_order(order, seed);
        char err[1024] = {0};
        auto t0 = std::chrono::steady_clock::now();
        if (emu_launch(k, grid, block, shmem, args.data(), err, sizeof err)) {
            std::fprintf(stderr, "launch %d: %s\n", launch, err);
            return 3;
        }
        if (std::getenv("EMU_TIMING"))   // per-launch times, for tuning the sanitizer tests
            std::fprintf(stderr, "cuda_emu timing: %s %.3f s\n", ::emu::g_kernels[k].name,
                         std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::fclose(in);
    FILE* out = std::fopen(argv[2], "wb");
    if (!out) { std::perror(argv[2]); return 2; }
    for (unsigned long long i = 0; i < nbuf; ++i) {
        if (sizes[i] && std::fwrite(buffers[i], 1, sizes[i], out) != sizes[i]) { std::perror("write"); return 2; }
        std::free(buffers[i]);
    }
    std::fclose(out);
    return 0;
}
