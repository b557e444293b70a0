# Charts of tests/bench/run.sh: throughput and p99 against concurrency,
# calendard beside its raw ceiling; error bars are the min..max of the runs.
# Usage: gnuplot -e "datadir='var/bench'; outdir='docs'" tests/bench/plot.gp
# Data columns (report.c): 1 conc; calendard 2-4 ok/s med,min,max 5-7 p99;
# raw 8-10 ok/s, 11-13 p99.
if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
    set terminal pngcairo size 1200,480 font ",10"
} else {
    set terminal png size 1200,480
}
set logscale x 2
set xtics (1, 4, 16, 64)
set xrange [0.8:80]
set grid
set key top left
set xlabel "concurrent clients"

set output outdir."/bench-bookings.png"
set multiplot layout 1,2 title "Bookings: calendard vs raw SQL transaction (2 MariaDB shards, durable commits)"
set ylabel "successful bookings/s"
set yrange [0:*]
plot datadir."/book-low.dat"  u 1:2:3:4 w yerrorlines lw 2 pt 7 lc rgb "#1f77b4" t "calendard, 100k listings", \
     datadir."/book-low.dat"  u 1:8:9:10 w yerrorlines lw 2 pt 5 dt 2 lc rgb "#1f77b4" t "raw, 100k listings", \
     datadir."/book-high.dat" u 1:2:3:4 w yerrorlines lw 2 pt 7 lc rgb "#d62728" t "calendard, 10 listings", \
     datadir."/book-high.dat" u 1:8:9:10 w yerrorlines lw 2 pt 5 dt 2 lc rgb "#d62728" t "raw, 10 listings"
set ylabel "p99 latency of successful bookings (ms)"
set logscale y
set yrange [*:*]
plot datadir."/book-low.dat"  u 1:5:6:7 w yerrorlines lw 2 pt 7 lc rgb "#1f77b4" t "calendard, 100k listings", \
     datadir."/book-low.dat"  u 1:11:12:13 w yerrorlines lw 2 pt 5 dt 2 lc rgb "#1f77b4" t "raw, 100k listings", \
     datadir."/book-high.dat" u 1:5:6:7 w yerrorlines lw 2 pt 7 lc rgb "#d62728" t "calendard, 10 listings", \
     datadir."/book-high.dat" u 1:11:12:13 w yerrorlines lw 2 pt 5 dt 2 lc rgb "#d62728" t "raw, 10 listings"
unset multiplot
unset logscale y

set output outdir."/bench-reads.png"
set multiplot layout 1,2 title "Availability reads, warm cache: calendard vs raw memcached multi-get of the same keys"
set ylabel "requests/s"
set yrange [0:*]
plot datadir."/read-single.dat"   u 1:2:3:4 w yerrorlines lw 2 pt 7 lc rgb "#2ca02c" t "calendard, 1 listing x 30 nights", \
     datadir."/read-single.dat"   u 1:8:9:10 w yerrorlines lw 2 pt 5 dt 2 lc rgb "#2ca02c" t "raw multi-get, 1 listing", \
     datadir."/read-search50.dat" u 1:2:3:4 w yerrorlines lw 2 pt 7 lc rgb "#9467bd" t "calendard, search of 50 listings", \
     datadir."/read-search50.dat" u 1:8:9:10 w yerrorlines lw 2 pt 5 dt 2 lc rgb "#9467bd" t "raw multi-get, 50 listings"
set ylabel "p99 latency (ms)"
set logscale y
set yrange [*:*]
plot datadir."/read-single.dat"   u 1:5:6:7 w yerrorlines lw 2 pt 7 lc rgb "#2ca02c" t "calendard, 1 listing", \
     datadir."/read-single.dat"   u 1:11:12:13 w yerrorlines lw 2 pt 5 dt 2 lc rgb "#2ca02c" t "raw, 1 listing", \
     datadir."/read-search50.dat" u 1:5:6:7 w yerrorlines lw 2 pt 7 lc rgb "#9467bd" t "calendard, search-50", \
     datadir."/read-search50.dat" u 1:11:12:13 w yerrorlines lw 2 pt 5 dt 2 lc rgb "#9467bd" t "raw, 50 listings"
unset multiplot
