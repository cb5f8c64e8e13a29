// nvrtc_check: compiles est_wgmma.cu through NVRTC for sm_90a (no GPU needed)
#include <nvrtc.h>
#include <stdio.h>
#include <stdlib.h>
#include <vector>
int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "est_wgmma.cu";
    FILE *f = fopen(path, "rb");
    if (!f) return 2;
    fseek(f, 0, SEEK_END); long n = ftell(f); fseek(f, 0, SEEK_SET);
    std::vector<char> src(n + 1); fread(src.data(), 1, n, f); src[n] = 0; fclose(f);
    nvrtcProgram prog;
    nvrtcCreateProgram(&prog, src.data(), path, 0, 0, 0);
    const char *opts[] = {"--gpu-architecture=sm_90a", "-std=c++17"};
    nvrtcResult r = nvrtcCompileProgram(prog, 2, opts);
    size_t ls; nvrtcGetProgramLogSize(prog, &ls);
    std::vector<char> log(ls + 1); nvrtcGetProgramLog(prog, log.data());
    if (ls > 1) printf("%s\n", log.data());
    size_t cs = 0;
    if (r == NVRTC_SUCCESS) nvrtcGetCUBINSize(prog, &cs);
    printf("NVRTC %s: %s, cubin %zu bytes\n", path, nvrtcGetErrorString(r), cs);
    return r == NVRTC_SUCCESS ? 0 : 1;
}
