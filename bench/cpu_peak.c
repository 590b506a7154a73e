#include <immintrin.h>
#include <stdio.h>
#include <omp.h>
int main(){
  const long iters = 200000000L;
  double t0 = omp_get_wtime();
  float sink = 0;
  #pragma omp parallel reduction(+:sink)
  {
    __m512 a[12]; __m512 b = _mm512_set1_ps(1.0000001f), c = _mm512_set1_ps(1e-7f);
    for (int k=0;k<12;k++) a[k]=_mm512_set1_ps((float)k);
    for (long i=0;i<iters;i++){
      #pragma GCC unroll 12
      for(int k=0;k<12;k++) a[k]=_mm512_fmadd_ps(a[k],b,c);
    }
    for (int k=0;k<12;k++) sink += _mm512_reduce_add_ps(a[k]);
  }
  double t = omp_get_wtime()-t0;
  int th = omp_get_max_threads();
  printf("{\"threads\": %d, \"gflops\": %.1f, \"sink\": %g}\n", th, 2.0*16*12*iters*th/t/1e9, sink);
}
