/* Test-only stand-in for libnvinfer / libnvonnxparser / libnvinfer_plugin.
 *
 * NVIDIA's tensorrt-cu12-bindings wheels hold only the Python extension (tensorrt.so); it links these
 * libraries for the 9 C entry points below. Providing them lets the real extension import on a machine
 * without TensorRT so tests can introspect its classes and enums. Every factory returns NULL: nothing
 * can be built or run through this stub, and nothing here is shipped.
 */
#include <stddef.h>

void* createInferBuilder_INTERNAL(void* logger, int version) { (void)logger; (void)version; return NULL; }
void* createInferRefitter_INTERNAL(void* engine, void* logger, int version) { (void)engine; (void)logger; (void)version; return NULL; }
void* createInferRuntime_INTERNAL(void* logger, int version) { (void)logger; (void)version; return NULL; }
void* createNvOnnxParserRefitter_INTERNAL(void* refitter, void* logger, int version) { (void)refitter; (void)logger; (void)version; return NULL; }
void* createNvOnnxParser_INTERNAL(void* network, void* logger, int version) { (void)network; (void)logger; (void)version; return NULL; }
void* getBuilderPluginRegistry(int language) { (void)language; return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
void* getPluginRegistry(void) { return NULL; }
int initLibNvInferPlugins(void* logger, const char* ns) { (void)logger; (void)ns; return 0; }
