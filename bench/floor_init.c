/* Benchmark floor (a): what loading libcurl and jansson and setting libcurl
 * up costs before any work.  Linked exactly as hive-ci-prefetch is. */
#include <curl/curl.h>

int main(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	return curl_easy_init() == NULL;
}
